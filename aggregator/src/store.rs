//! Persistent aggregator state behind a small trait, stored in sled.
//!
//! sled's last release is from 2021 (0.34.7); the trait keeps a swap (e.g. to redb) a one-file
//! change. Writes become durable with [`Store::flush`]; the coordinator flushes before it acts on
//! a transition (see `coordinator.rs` for what is written when).

use federation::SiteId;
use federation::engine::{RoundRecord, StudyState};
use federation::task::ResultBody;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {message}")]
    Backend { path: PathBuf, message: String },
    #[error("state store {path}: record {key} is corrupt: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// What the aggregator remembers about a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site: String,
    pub agent_version: String,
    pub protocol_version: u32,
    pub last_seen_ms: u64,
}

/// The aggregator's durable state.
pub trait Store: Send + Sync {
    /// Writes a snapshot of a study's state (durable after the next [`Store::flush`]).
    fn put_study(&self, state: &StudyState) -> Result<(), StoreError>;
    fn studies(&self) -> Result<Vec<StudyState>, StoreError>;
    /// Writes a completed round — what was asked, every site's result and its size — in one
    /// atomic batch, not yet forced to disk: the caller calls [`Store::flush`] before handing
    /// out the next round. The stored results are the study's replay log: a restart replays the
    /// rounds stored after the last snapshot (`put_study`).
    fn write_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError>;
    /// Forces every earlier write to disk.
    fn flush(&self) -> Result<(), StoreError>;
    /// Every completed round of a study; `results` holds what is still stored (see
    /// [`Store::prune_results`]), `bytes` and `kinds` are always there.
    fn rounds(&self, study: &str) -> Result<Vec<RoundRecord>, StoreError>;
    /// The results stored for one round (empty if the round never completed or was pruned).
    fn results(
        &self,
        study: &str,
        round: u32,
    ) -> Result<Vec<(SiteId, ResultBody, u64)>, StoreError>;
    /// Deletes the stored results of rounds before `before` (a snapshot now covers them).
    fn prune_results(&self, study: &str, before: u32) -> Result<(), StoreError>;
    fn put_site(&self, record: &SiteRecord) -> Result<(), StoreError>;
    fn sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
}

/// sled-backed store under `<state_dir>/db`.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
}

impl SledStore {
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let db = sled::open(&path).map_err(|e| StoreError::Backend {
            path: path.clone(),
            message: format!("{e} (is another aggregator using this state directory?)"),
        })?;
        Ok(Self { path, db })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn put<T: Serialize>(&self, key: String, value: &T) -> Result<(), StoreError> {
        self.put_lazy(key, value)?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes without forcing it to disk (sled flushes in the background and on the next `put`).
    fn put_lazy<T: Serialize>(&self, key: String, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.db
            .insert(key.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn scan<T: for<'de> Deserialize<'de>>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                key: String::from_utf8_lossy(&k).into_owned(),
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }
}

impl Store for SledStore {
    fn put_study(&self, state: &StudyState) -> Result<(), StoreError> {
        self.put_lazy(format!("study/{}", state.spec.id), state)
    }
    fn studies(&self) -> Result<Vec<StudyState>, StoreError> {
        self.scan("study/")
    }
    fn write_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        // The round's tasks, sizes and kinds as JSON; the results as protobuf, as they travelled
        // (compact and fast: JSON of a LASSO round's sums cost more than computing them).
        let meta = RoundRecord {
            results: Default::default(),
            ..record.clone()
        };
        batch.insert(
            format!("round/{study}/{:010}", record.round).as_bytes(),
            serde_json::to_vec(&meta).map_err(|e| self.err(e))?,
        );
        let study_id = federation::StudyId::new(study).map_err(|e| self.err(e))?;
        for (site, body) in &record.results {
            let bytes = record.bytes.get(site).copied().unwrap_or(0);
            let msg = protocol::pb::TaskResult::from(&federation::task::TaskResult {
                study_id: study_id.clone(),
                round: record.round,
                body: body.clone(),
            });
            let mut value = bytes.to_le_bytes().to_vec();
            prost::Message::encode(&msg, &mut value).map_err(|e| self.err(e))?;
            batch.insert(
                format!("result/{study}/{:010}/{site}", record.round).as_bytes(),
                value,
            );
        }
        // One batch: a crash leaves either the whole round or none of it.
        self.db.apply_batch(batch).map_err(|e| self.err(e))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
    fn rounds(&self, study: &str) -> Result<Vec<RoundRecord>, StoreError> {
        let mut rounds: Vec<RoundRecord> = self.scan(&format!("round/{study}/"))?;
        for r in &mut rounds {
            r.results = self
                .results(study, r.round)?
                .into_iter()
                .map(|(s, b, _)| (s, b))
                .collect();
        }
        Ok(rounds)
    }
    fn prune_results(&self, study: &str, before: u32) -> Result<(), StoreError> {
        let prefix = format!("result/{study}/");
        let end = format!("result/{study}/{before:010}");
        let mut batch = sled::Batch::default();
        for kv in self.db.range(prefix.as_bytes()..end.as_bytes()) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            batch.remove(k);
        }
        self.db.apply_batch(batch).map_err(|e| self.err(e))
    }
    fn results(
        &self,
        study: &str,
        round: u32,
    ) -> Result<Vec<(SiteId, ResultBody, u64)>, StoreError> {
        let prefix = format!("result/{study}/{round:010}/");
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message,
            };
            if v.len() < 8 {
                return Err(corrupt("too short".into()));
            }
            let bytes = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
            let msg: protocol::pb::TaskResult =
                prost::Message::decode(&v[8..]).map_err(|e| corrupt(e.to_string()))?;
            let result =
                federation::task::TaskResult::try_from(msg).map_err(|e| corrupt(e.to_string()))?;
            let site = SiteId::new(key.rsplit('/').next().unwrap_or_default())
                .map_err(|e| corrupt(e.to_string()))?;
            out.push((site, result.body, bytes));
        }
        Ok(out)
    }
    fn put_site(&self, record: &SiteRecord) -> Result<(), StoreError> {
        self.put(format!("site/{}", record.site), record)
    }
    fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.scan("site/")
    }
}
