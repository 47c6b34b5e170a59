//! Persistent aggregator state behind a small trait, stored in sled.
//!
//! sled's last release is from 2021 (0.34.7); the trait keeps a swap (e.g. to redb) a one-file
//! change. Writes become durable with [`Store::flush`]; the coordinator flushes before it acts on
//! a transition (see `coordinator.rs` for what is written when).

use crate::coordinator::RetiredStudy;
use crate::roundlog::{LogError, LoggedRound, RoundLog};
use federation::SiteId;
use federation::engine::{RoundRecord, StudyState};
use federation::task::ResultBody;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The snapshots of the studies not retired (see [`Store::retire`]).
    fn studies(&self) -> Result<Vec<StudyState>, StoreError>;
    /// Retires a finished study, atomically and durably before returning: its snapshot moves
    /// to the archive (read back by [`Store::archived_study`]) and `summary` is recorded (read
    /// back by [`Store::retired`]); [`Store::studies`] no longer returns it. The study's round
    /// log is closed (and removed if empty).
    fn retire(&self, study: &str, summary: &RetiredStudy) -> Result<(), StoreError>;
    /// The summaries of every retired study.
    fn retired(&self) -> Result<Vec<RetiredStudy>, StoreError>;
    /// A retired study's final snapshot.
    fn archived_study(&self, study: &str) -> Result<Option<StudyState>, StoreError>;
    /// Writes a completed round: every site's result, as it travelled, appended to the study's
    /// round log (the replay log between snapshots), and the round's sizes and result kinds.
    /// Not yet durable: the caller calls [`Store::sync_rounds`] before handing out the next
    /// round. The tasks are not stored (a replay derives them again from the spec and the
    /// earlier results).
    fn write_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError>;
    /// Forces the study's written rounds to disk.
    fn sync_rounds(&self, study: &str) -> Result<(), StoreError>;
    /// Forces every snapshot and record written so far to disk.
    fn flush(&self) -> Result<(), StoreError>;
    /// Every completed round of a study: sizes and kinds, and the results where the round log
    /// still holds them (see [`Store::prune_results`]); `tasks` are empty.
    fn rounds(&self, study: &str) -> Result<Vec<RoundRecord>, StoreError>;
    /// The rounds in the study's round log, in order.
    fn logged_rounds(&self, study: &str) -> Result<Vec<LoggedRound>, StoreError>;
    /// Empties the study's round log (call only once a durable snapshot covers it).
    fn prune_results(&self, study: &str) -> Result<(), StoreError>;
    fn put_site(&self, record: &SiteRecord) -> Result<(), StoreError>;
    fn sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
}

/// sled-backed store under `<state_dir>/db`, with the round logs under `<state_dir>/rounds`.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    log: RoundLog,
}

impl SledStore {
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        // sled's default page cache is 1 GiB; the snapshots it holds are read once at start-up,
        // so a small cache bounds the aggregator's memory without slowing the rounds.
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| StoreError::Backend {
                path: path.clone(),
                message: format!("{e} (is another aggregator using this state directory?)"),
            })?;
        let log = RoundLog::open(&state_dir.join("rounds")).map_err(|e| StoreError::Backend {
            path: state_dir.join("rounds"),
            message: e.to_string(),
        })?;
        Ok(Self { path, db, log })
    }

    fn log_err(&self, e: LogError) -> StoreError {
        StoreError::Backend {
            path: self.path.with_file_name("rounds"),
            message: e.to_string(),
        }
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
    fn retire(&self, study: &str, summary: &RetiredStudy) -> Result<(), StoreError> {
        let key = format!("study/{study}");
        let snapshot = self
            .db
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message: "no snapshot to retire (already retired, or never stored)".into(),
            })?;
        // The stored bytes are moved as they are: the archive is exactly the durable final
        // snapshot, whatever the state in memory holds besides.
        let mut batch = sled::Batch::default();
        batch.insert(format!("archive/{study}").as_bytes(), snapshot);
        batch.insert(
            format!("retired/{study}").as_bytes(),
            serde_json::to_vec(summary).map_err(|e| self.err(e))?,
        );
        batch.remove(key.as_bytes());
        self.db.apply_batch(batch).map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        self.log.close(study).map_err(|e| self.log_err(e))
    }
    fn retired(&self) -> Result<Vec<RetiredStudy>, StoreError> {
        self.scan("retired/")
    }
    fn archived_study(&self, study: &str) -> Result<Option<StudyState>, StoreError> {
        let key = format!("archive/{study}");
        let Some(bytes) = self.db.get(key.as_bytes()).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                key,
                message: e.to_string(),
            })
    }
    fn write_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError> {
        let study_id = federation::StudyId::new(study).map_err(|e| self.err(e))?;
        let encoded: Vec<(&SiteId, u64, Vec<u8>)> = record
            .results
            .iter()
            .map(|(site, body)| {
                let msg = protocol::pb::TaskResult::from(&federation::task::TaskResult {
                    study_id: study_id.clone(),
                    round: record.round,
                    body: body.clone(),
                });
                let bytes = record.bytes.get(site).copied().unwrap_or(0);
                (site, bytes, prost::Message::encode_to_vec(&msg))
            })
            .collect();
        self.log
            .append(study, record.round, &encoded)
            .map_err(|e| self.log_err(e))?;
        let meta = RoundRecord {
            round: record.round,
            tasks: Default::default(),
            results: Default::default(),
            bytes: record.bytes.clone(),
            kinds: record.kinds.clone(),
        };
        // Durable with the next snapshot's flush; a replay writes it again if it is lost.
        self.put_lazy(format!("round/{study}/{:010}", record.round), &meta)
    }
    fn sync_rounds(&self, study: &str) -> Result<(), StoreError> {
        self.log.sync(study).map_err(|e| self.log_err(e))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
    fn rounds(&self, study: &str) -> Result<Vec<RoundRecord>, StoreError> {
        let mut rounds: Vec<RoundRecord> = self.scan(&format!("round/{study}/"))?;
        let mut logged: BTreeMap<u32, Vec<(SiteId, ResultBody, u64)>> =
            self.logged_rounds(study)?.into_iter().collect();
        for r in &mut rounds {
            if let Some(results) = logged.remove(&r.round) {
                r.results = results.into_iter().map(|(s, b, _)| (s, b)).collect();
            }
        }
        Ok(rounds)
    }
    fn logged_rounds(&self, study: &str) -> Result<Vec<LoggedRound>, StoreError> {
        self.log.read(study).map_err(|e| self.log_err(e))
    }
    fn prune_results(&self, study: &str) -> Result<(), StoreError> {
        self.log.truncate(study).map_err(|e| self.log_err(e))
    }
    fn put_site(&self, record: &SiteRecord) -> Result<(), StoreError> {
        self.put(format!("site/{}", record.site), record)
    }
    fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.scan("site/")
    }
}
