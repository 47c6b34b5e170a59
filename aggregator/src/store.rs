//! Persistent aggregator state behind a small trait: small records in sled, study snapshots and
//! round logs as plain files.
//!
//! Layout of a state directory:
//! - `studies/<id>.json`: the latest snapshot of each study not yet retired (written to a
//!   temporary name, synced and renamed, so a crash leaves the old or the new snapshot);
//! - `archive/<id>.json`: the final snapshot of each retired study, moved there by a rename;
//! - `rounds/<id>.log`: the round logs ([`crate::roundlog`]);
//! - `db/` (sled): site records, per-round sizes and result kinds (`round/<id>/<n>`), and the
//!   summaries of retired studies (`retired/<id>`).
//!
//! Why snapshots are not in sled: sled keeps a copy of the values it writes in its page cache
//! and write buffers, and a study's snapshot is megabytes at 50 sites, so a long-running
//! aggregator's resident memory grew with the snapshots it had written (≈ 3 MB per wave of
//! three studies in `aggregator bench load`, measured with heaptrack) even after the studies had
//! left the coordinator. A state directory written before this layout (snapshots as sled keys
//! `study/<id>`) is still read; such a snapshot moves to a file when it is next written.
//!
//! sled's last release is from 2021 (0.34.7); the trait keeps a swap (e.g. to redb) a one-file
//! change. Writes become durable with [`Store::flush`] (snapshots: as they are written); the
//! coordinator flushes before it acts on a transition (see `coordinator.rs` for what is written
//! when).

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
    /// Writes a snapshot of a study's state (durable after the next [`Store::flush`]; the file
    /// store makes it durable at once).
    fn put_study(&self, state: &StudyState) -> Result<(), StoreError>;
    /// The snapshots of the studies not retired (see [`Store::retire`]).
    fn studies(&self) -> Result<Vec<StudyState>, StoreError>;
    /// Retires a finished study, durably before returning: `summary` is recorded (read back by
    /// [`Store::retired`]), then its snapshot moves to the archive (read back by
    /// [`Store::archived_study`]) and [`Store::studies`] no longer returns it. A crash in
    /// between leaves both the summary and the snapshot: the study is then loaded whole and
    /// retired again. The study's round log is closed (and removed if empty).
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
    /// Records a completed round's sizes and result kinds only, not its results: a round the
    /// aggregator asks the sites for again after a crash instead of logging it
    /// (`StudyState::completed_recomputable`). Durable with the next flush.
    fn note_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError>;
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

/// The aggregator's store: sled under `<state_dir>/db`, snapshots under `<state_dir>/studies`
/// and `<state_dir>/archive`, round logs under `<state_dir>/rounds` (see the module doc).
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    log: RoundLog,
    studies_dir: PathBuf,
    archive_dir: PathBuf,
}

impl SledStore {
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        // sled's default page cache is 1 GiB; it holds only small records (sites, round sizes,
        // summaries of retired studies), so a small cache bounds the aggregator's memory
        // without slowing the rounds.
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|e| StoreError::Backend {
                path: path.clone(),
                message: format!("{e} (is another aggregator using this state directory?)"),
            })?;
        let log = RoundLog::open(&state_dir.join("rounds")).map_err(|e| StoreError::Backend {
            path: state_dir.join("rounds"),
            message: e.to_string(),
        })?;
        let studies_dir = state_dir.join("studies");
        let archive_dir = state_dir.join("archive");
        for dir in [&studies_dir, &archive_dir] {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Self {
            path,
            db,
            log,
            studies_dir,
            archive_dir,
        })
    }

    fn file_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn snapshot_path(&self, study: &str) -> PathBuf {
        self.studies_dir.join(format!("{study}.json"))
    }

    fn archive_path(&self, study: &str) -> PathBuf {
        self.archive_dir.join(format!("{study}.json"))
    }

    /// Reads a snapshot file; `None` if there is none.
    fn read_state(path: &Path) -> Result<Option<StudyState>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    key: String::new(),
                    message: format!(
                        "{e}; move the file away to drop the study (its results folder, if written, stays)"
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::file_err(path, e)),
        }
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

/// Forces a directory's entries (a rename into it) to disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Store for SledStore {
    fn put_study(&self, state: &StudyState) -> Result<(), StoreError> {
        // Everything written before the snapshot (the rounds' sizes and kinds) is made durable
        // first: once the snapshot is on disk a restart does not replay the rounds it covers,
        // so their records must not be lost behind it.
        self.db.flush().map_err(|e| self.err(e))?;
        let id = state.spec.id.as_str();
        let path = self.snapshot_path(id);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::new(&mut f);
            serde_json::to_writer(&mut w, state)?;
            w.flush()?;
            drop(w);
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&self.studies_dir)
        };
        write().map_err(|e| Self::file_err(&path, e))?;
        // A snapshot from before the file layout is superseded (removed with the next flush).
        let legacy = format!("study/{id}");
        if self.db.contains_key(&legacy).map_err(|e| self.err(e))? {
            self.db.remove(&legacy).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
    fn studies(&self) -> Result<Vec<StudyState>, StoreError> {
        let mut out: BTreeMap<String, StudyState> = BTreeMap::new();
        let entries = std::fs::read_dir(&self.studies_dir)
            .map_err(|e| Self::file_err(&self.studies_dir, e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Self::file_err(&self.studies_dir, e))?
                .path();
            // Only `<id>.json`: a `.json.tmp` is a write a crash cut short (never renamed).
            if path.extension().is_some_and(|x| x == "json")
                && let Some(state) = Self::read_state(&path)?
            {
                out.insert(state.spec.id.to_string(), state);
            }
        }
        // The layout before snapshot files: sled keys `study/<id>`.
        for state in self.scan::<StudyState>("study/")? {
            out.entry(state.spec.id.to_string()).or_insert(state);
        }
        Ok(out.into_values().collect())
    }
    fn retire(&self, study: &str, summary: &RetiredStudy) -> Result<(), StoreError> {
        // The summary first: a crash before the move leaves both, and the study is loaded whole.
        self.put(format!("retired/{study}"), summary)?;
        let from = self.snapshot_path(study);
        let to = self.archive_path(study);
        let legacy = self
            .db
            .get(format!("study/{study}"))
            .map_err(|e| self.err(e))?;
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| Self::file_err(&from, e))?;
        } else if let Some(bytes) = &legacy {
            std::fs::write(&to, bytes)
                .and_then(|()| std::fs::File::open(&to)?.sync_all())
                .map_err(|e| Self::file_err(&to, e))?;
        } else {
            return Err(StoreError::Corrupt {
                path: from,
                key: study.to_string(),
                message: "no snapshot to retire (already retired, or never stored)".into(),
            });
        }
        sync_dir(&self.archive_dir)
            .and_then(|()| sync_dir(&self.studies_dir))
            .map_err(|e| Self::file_err(&self.archive_dir, e))?;
        if legacy.is_some() {
            self.db
                .remove(format!("study/{study}"))
                .map_err(|e| self.err(e))?;
            self.db.flush().map_err(|e| self.err(e))?;
        }
        self.log.close(study).map_err(|e| self.log_err(e))
    }
    fn retired(&self) -> Result<Vec<RetiredStudy>, StoreError> {
        self.scan("retired/")
    }
    fn archived_study(&self, study: &str) -> Result<Option<StudyState>, StoreError> {
        Self::read_state(&self.archive_path(study))
    }
    fn write_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError> {
        let study_id = federation::StudyId::new(study).map_err(|e| self.err(e))?;
        let encoded: Vec<(&SiteId, u64, Vec<u8>)> = record
            .results
            .iter()
            .map(|(site, body)| {
                let msg = protocol::convert::result_to_pb(&study_id, record.round, body);
                let bytes = record.bytes.get(site).copied().unwrap_or(0);
                (site, bytes, prost::Message::encode_to_vec(&msg))
            })
            .collect();
        self.log
            .append(study, record.round, &encoded)
            .map_err(|e| self.log_err(e))?;
        self.note_round(study, record)
    }
    fn note_round(&self, study: &str, record: &RoundRecord) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{Coordinator, Residency};
    use federation::study::{AnalysisSpec, StudySpec, Table1Spec};

    fn state(id: &str) -> StudyState {
        let spec = StudySpec {
            id: federation::StudyId::new(id).unwrap(),
            title: String::new(),
            analysis: AnalysisSpec::Table1(Table1Spec {
                secure_aggregation: false,
                label_column: "y".into(),
                positive_label: "1".into(),
                negative_label: "0".into(),
                variables: vec!["age".into()],
                categorical: vec![],
                resolution: 1e-9,
                depth_per_round: 4,
                on_masked_dropout: Default::default(),
            }),
        };
        let sites = ["A", "B"].map(|s| SiteId::new(s).unwrap()).to_vec();
        StudyState::new(spec, sites, 0, 60_000).unwrap()
    }

    #[test]
    fn snapshots_are_files_and_a_sled_snapshot_of_the_old_layout_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.put_study(&state("new")).unwrap();
        assert!(dir.path().join("studies/new.json").exists());
        // The old layout: the snapshot as a sled key.
        store
            .db
            .insert("study/old", serde_json::to_vec(&state("old")).unwrap())
            .unwrap();
        let ids = |s: &SledStore| -> Vec<String> {
            s.studies()
                .unwrap()
                .iter()
                .map(|s| s.spec.id.to_string())
                .collect()
        };
        assert_eq!(ids(&store), ["new", "old"]);
        // Written again, it moves to a file and the key goes.
        store.put_study(&state("old")).unwrap();
        assert!(!store.db.contains_key("study/old").unwrap());
        assert_eq!(ids(&store), ["new", "old"]);
        // A write cut short by a crash (never renamed) is ignored.
        std::fs::write(dir.path().join("studies/half.json.tmp"), b"{\"spec\":").unwrap();
        assert_eq!(ids(&store), ["new", "old"]);
    }

    #[test]
    fn a_retirement_cut_short_after_its_summary_loads_the_study_whole_and_retires_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut finished = state("t");
        finished.status = federation::engine::StudyStatus::Completed;
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_study(&finished).unwrap();
            // `retire` wrote the summary, then the process died before the rename.
            let c = Coordinator::new(Box::new(store), vec![], 60_000, 20_000).unwrap();
            let summary = c.status().studies.remove(0);
            drop(c);
            let store = SledStore::open(dir.path()).unwrap();
            store
                .put(
                    "retired/t".into(),
                    &RetiredStudy {
                        hash: finished.hash.clone(),
                        status: finished.status.clone(),
                        round: finished.round,
                        stage: None,
                        summary,
                    },
                )
                .unwrap();
        }
        let c = Coordinator::new(
            Box::new(SledStore::open(dir.path()).unwrap()),
            vec![],
            60_000,
            20_000,
        )
        .unwrap();
        let whole = Residency {
            running: 0,
            finished_in_memory: 1,
            retired: 0,
        };
        assert_eq!(c.residency(), whole);
        assert!(c.retire("t").unwrap());
        assert!(dir.path().join("archive/t.json").exists());
        assert!(!dir.path().join("studies/t.json").exists());
        assert_eq!(c.study("t").unwrap(), {
            let mut f = finished.clone();
            f.previous = None;
            f
        });
        drop(c);
        let c = Coordinator::new(
            Box::new(SledStore::open(dir.path()).unwrap()),
            vec![],
            60_000,
            20_000,
        )
        .unwrap();
        assert_eq!(
            c.residency(),
            Residency {
                running: 0,
                finished_in_memory: 0,
                retired: 1
            }
        );
    }
}
