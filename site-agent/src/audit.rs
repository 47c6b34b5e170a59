//! The site's append-only audit log: one JSON line per message sent, hash-chained so that an
//! edited, removed or reordered line is detected by `site-agent audit --verify`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One message the site sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// UTC, RFC 3339.
    pub time: String,
    pub study: String,
    pub round: u32,
    pub task_kind: String,
    pub result_kind: String,
    /// Shapes and counts of what was sent (never the values).
    pub summary: String,
    /// Size of the encoded protobuf payload.
    pub bytes: u64,
    /// SHA-256 of the encoded payload exactly as sent.
    pub payload_sha256: String,
    /// `hash` of the previous line ("" for the first).
    pub prev: String,
    /// SHA-256 over this entry's other fields (canonical JSON with `hash` empty).
    pub hash: String,
}

/// An audit-log problem.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn entry_hash(e: &AuditEntry) -> String {
    let mut c = e.clone();
    c.hash = String::new();
    let json = serde_json::to_string(&c).expect("audit entry serialises");
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// Appends to the log at `path`, continuing its hash chain.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    next_seq: u64,
    last_hash: String,
}

impl AuditLog {
    /// Opens (or creates) the log; refuses a log whose chain is already broken.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let entries = if path.exists() {
            verify(path)?
        } else {
            Vec::new()
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            next_seq: entries.last().map_or(0, |e| e.seq + 1),
            last_hash: entries.last().map_or_else(String::new, |e| e.hash.clone()),
        })
    }

    /// Appends one entry (fsync'd before returning: the line exists before the message leaves).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        study: &str,
        round: u32,
        task_kind: &str,
        result_kind: &str,
        summary: String,
        payload: &[u8],
    ) -> Result<AuditEntry, AuditError> {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut e = AuditEntry {
            seq: self.next_seq,
            time,
            study: study.to_string(),
            round,
            task_kind: task_kind.to_string(),
            result_kind: result_kind.to_string(),
            summary,
            bytes: payload.len() as u64,
            payload_sha256: hex::encode(Sha256::digest(payload)),
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let line = serde_json::to_string(&e).expect("audit entry serialises");
        writeln!(f, "{line}").map_err(io)?;
        f.sync_data().map_err(io)?;
        self.next_seq += 1;
        self.last_hash = e.hash.clone();
        Ok(e)
    }
}

/// Reads the whole log and checks the chain; the error names the first bad line.
pub fn verify(path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out: Vec<AuditEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let corrupt = |message: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let e: AuditEntry =
            serde_json::from_str(line).map_err(|e| corrupt(format!("not an audit entry ({e})")))?;
        let expected_prev = out.last().map_or("", |p| p.hash.as_str());
        if e.prev != expected_prev {
            return Err(corrupt(
                "chain broken: `prev` does not match the previous line (a line was removed, inserted or reordered)".into(),
            ));
        }
        if e.seq != out.len() as u64 {
            return Err(corrupt(format!(
                "sequence number {} where {} was expected",
                e.seq,
                out.len()
            )));
        }
        if entry_hash(&e) != e.hash {
            return Err(corrupt(
                "hash mismatch: this line was edited after it was written".into(),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Human-readable rendering for `site-agent audit`.
pub fn render(entries: &[AuditEntry]) -> String {
    let mut s = format!(
        "{:>4}  {:<25} {:<16} {:>5}  {:<15} {:>8}  {}\n",
        "seq", "time (UTC)", "study", "round", "sent", "bytes", "what"
    );
    for e in entries {
        s.push_str(&format!(
            "{:>4}  {:<25} {:<16} {:>5}  {:<15} {:>8}  {}\n",
            e.seq, e.time, e.study, e.round, e.result_kind, e.bytes, e.summary
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_edits_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).unwrap();
        for r in 1..=3 {
            log.append(
                "t1",
                r,
                "histogram",
                "histogram",
                format!("round {r}"),
                b"payload",
            )
            .unwrap();
        }
        // Reopening continues the chain.
        let mut log = AuditLog::open(&p).unwrap();
        log.append("t1", 4, "histogram", "histogram", "x".into(), b"p")
            .unwrap();
        assert_eq!(verify(&p).unwrap().len(), 4);

        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("round 2", "round 9")).unwrap();
        let e = verify(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("edited"), "{e}");

        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let e = verify(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("chain broken"), "{e}");
    }
}
