//! Append-only log of a study's completed rounds (every site's result as it travelled): the
//! replay log between two snapshots of the study's state.
//!
//! One file per study, `<state_dir>/rounds/<study>.log`, a sequence of records:
//! `len: u32 LE | crc32(payload): u32 LE | payload` (`federation::records`), the payload being
//! `round: u32 | sites: u32 | per site (site_len: u16 | site | bytes: u64 | result_len: u32 |
//! protobuf TaskResult)`, all little-endian. Why a plain file rather than sled: a round's results
//! are megabytes (a pipeline's LASSO sums), which sled writes as one blob file per value, and the
//! copying dominated the aggregator's time; an append and one `fdatasync` per round is the least
//! a durable round can cost. A record cut short by a crash (short or failing its checksum at the
//! end of the file) was never acknowledged, so it is dropped; damage before the last record is
//! reported as corruption.

use federation::SiteId;
use federation::task::ResultBody;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A logged round: per site, its result and its size on the wire.
pub type LoggedRound = (u32, Vec<(SiteId, ResultBody, u64)>);

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("round log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "round log {path} is corrupt at byte {offset}: {message}; move it away to resume the study from its last snapshot (later rounds are then asked again)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

/// The per-study round logs of one state directory.
pub struct RoundLog {
    dir: PathBuf,
    open: Mutex<BTreeMap<String, File>>,
}

impl RoundLog {
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    fn path(&self, study: &str) -> PathBuf {
        self.dir.join(format!("{study}.log"))
    }

    fn io(&self, study: &str) -> impl Fn(std::io::Error) -> LogError {
        let path = self.path(study);
        move |source| LogError::Io {
            path: path.clone(),
            source,
        }
    }

    fn with_file<T>(
        &self,
        study: &str,
        f: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> Result<T, LogError> {
        let mut open = self.open.lock().expect("round log lock poisoned");
        if !open.contains_key(study) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(study))
                .map_err(self.io(study))?;
            open.insert(study.to_string(), file);
        }
        f(open.get_mut(study).expect("just inserted")).map_err(self.io(study))
    }

    /// Appends one round (not yet forced to disk: see [`RoundLog::sync`]). `encoded` holds each
    /// site's result as a protobuf `TaskResult` and its size on the wire.
    pub fn append(
        &self,
        study: &str,
        round: u32,
        encoded: &[(&SiteId, u64, Vec<u8>)],
    ) -> Result<(), LogError> {
        let mut payload = Vec::with_capacity(
            8 + encoded
                .iter()
                .map(|(s, _, b)| 14 + s.as_str().len() + b.len())
                .sum::<usize>(),
        );
        payload.extend_from_slice(&round.to_le_bytes());
        payload.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        for (site, bytes, body) in encoded {
            let name = site.as_str().as_bytes();
            payload.extend_from_slice(&(name.len() as u16).to_le_bytes());
            payload.extend_from_slice(name);
            payload.extend_from_slice(&bytes.to_le_bytes());
            payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
            payload.extend_from_slice(body);
        }
        let record = federation::records::frame(&payload).map_err(|message| LogError::Corrupt {
            path: self.path(study),
            offset: 0,
            message,
        })?;
        self.with_file(study, |f| f.write_all(&record))
    }

    /// Forces the study's appended rounds to disk.
    pub fn sync(&self, study: &str) -> Result<(), LogError> {
        self.with_file(study, |f| f.sync_data())
    }

    /// Empties the study's log (a durable snapshot now covers every logged round).
    pub fn truncate(&self, study: &str) -> Result<(), LogError> {
        self.with_file(study, |f| {
            f.set_len(0)?;
            f.sync_data()
        })
    }

    /// Closes the study's log file (the study is over); removes the file if it is empty, so a
    /// long-running aggregator keeps neither a handle nor an empty file per finished study.
    pub fn close(&self, study: &str) -> Result<(), LogError> {
        let mut open = self.open.lock().expect("round log lock poisoned");
        open.remove(study);
        let path = self.path(study);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => std::fs::remove_file(&path).map_err(self.io(study)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(study)(e)),
        }
    }

    /// Every round in the study's log, in order, decoded.
    pub fn read(&self, study: &str) -> Result<Vec<LoggedRound>, LogError> {
        let path = self.path(study);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(self.io(study))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(study)(e)),
        }
        let corrupt = |offset: usize, message: String| LogError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            message,
        };
        let records = federation::records::split(&bytes)
            .map_err(|at| corrupt(at, "checksum mismatch".into()))?;
        if let Some(at) = records.torn_at {
            // The last record, cut short by a crash before it was synced: never acknowledged
            // to anyone, so it is as if it had not been written.
            tracing::warn!(
                "{}: dropping an incomplete last record at byte {at}",
                path.display()
            );
        }
        let mut out = Vec::new();
        for (at, payload) in records.payloads {
            out.push(decode(payload).map_err(|m| corrupt(at, m))?);
        }
        Ok(out)
    }
}

fn decode(p: &[u8]) -> Result<LoggedRound, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = p.get(at..at + n).ok_or("record ends early")?;
        at += n;
        Ok(s)
    };
    let round = u32::from_le_bytes(take(4)?.try_into().expect("4"));
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4"));
    let mut sites = Vec::new();
    for _ in 0..n {
        let name_len = u16::from_le_bytes(take(2)?.try_into().expect("2")) as usize;
        let name = std::str::from_utf8(take(name_len)?).map_err(|e| e.to_string())?;
        let site = SiteId::new(name).map_err(|e| e.to_string())?;
        let bytes = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        let body_len = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let msg: protocol::pb::TaskResult =
            prost::Message::decode(take(body_len)?).map_err(|e| e.to_string())?;
        let result = federation::task::TaskResult::try_from(msg).map_err(|e| e.to_string())?;
        sites.push((site, result.body, bytes));
    }
    Ok((round, sites))
}

#[cfg(test)]
mod tests {
    use super::*;
    use federation::task::{ResultBody, SiteFailure, TaskResult};

    fn encoded(study: &str, round: u32, message: &str) -> Vec<u8> {
        let r = TaskResult {
            study_id: federation::StudyId::new(study).unwrap(),
            round,
            body: ResultBody::Failure(SiteFailure {
                message: message.into(),
            }),
        };
        prost::Message::encode_to_vec(&protocol::pb::TaskResult::from(&r))
    }

    #[test]
    fn rounds_read_back_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = RoundLog::open(dir.path()).unwrap();
        let (a, b) = (SiteId::new("A").unwrap(), SiteId::new("B").unwrap());
        for round in 1..=3 {
            let rows = vec![
                (&a, 10 * round as u64, encoded("s", round, "a")),
                (&b, 20, encoded("s", round, "b")),
            ];
            log.append("s", round, &rows).unwrap();
        }
        log.sync("s").unwrap();
        let back = log.read("s").unwrap();
        assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(back[2].1[0].0, a);
        assert_eq!(back[2].1[0].2, 30);
        assert!(matches!(&back[1].1[1].1, ResultBody::Failure(f) if f.message == "b"));

        // A crash mid-append leaves a short last record: dropped, the rest kept.
        let path = dir.path().join("s.log");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let log = RoundLog::open(dir.path()).unwrap();
        assert_eq!(log.read("s").unwrap().len(), 2);

        // Damage before the last record is corruption, named with its offset.
        let mut bad = full.clone();
        bad[12] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = log.read("s").unwrap_err().to_string();
        assert!(err.contains("corrupt at byte 0"), "{err}");

        log.truncate("s").unwrap();
        assert!(log.read("s").unwrap().is_empty());
    }
}
