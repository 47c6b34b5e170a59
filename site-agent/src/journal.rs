//! The agent's journal of kept LASSO standardisations: appended next to the study memory, one
//! record per answer that kept new ones, and replayed into the memory when the agent starts.
//!
//! Why not in the memory file: a pipeline's LASSO stage keeps up to 5 000 sub-fits'
//! standardisations per batch (`federation::site::SiteMemory::take_kept_std`), which arrive over
//! some thirty rounds; rewriting the whole memory as JSON each time was more than a tenth of a
//! batch's CPU. A record is `len: u32 LE | crc32(payload): u32 LE | payload`, the payload the
//! changes in postcard. A record cut short by a crash (short, or failing its checksum, at the end
//! of the file) belongs to an answer that was never sent, so it is dropped; damage before the
//! last record is an error that names the file.

use federation::site::KeptStdChanges;
use std::io::Write;
use std::path::Path;

fn open_owner_only(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Appends one record.
pub fn append(path: &Path, changes: &KeptStdChanges) -> Result<(), String> {
    let payload = postcard::to_stdvec(changes).map_err(|e| e.to_string())?;
    let record = federation::records::frame(&payload)?;
    open_owner_only(path, false)
        .and_then(|mut f| f.write_all(&record))
        .map_err(|e| format!("appending to {}: {e}", path.display()))
}

/// Empties the journal (nothing is kept any more).
pub fn truncate(path: &Path) -> Result<(), String> {
    open_owner_only(path, true)
        .map(drop)
        .map_err(|e| format!("emptying {}: {e}", path.display()))
}

/// Every change in the journal, in order (none if there is no journal).
pub fn read(path: &Path) -> Result<KeptStdChanges, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let records = federation::records::split(&bytes).map_err(|at| {
        format!(
            "{} is corrupt at byte {at} (checksum mismatch); move it away: the running pipeline study's LASSO stage then stops naming a fit, and is resubmitted",
            path.display()
        )
    })?;
    if let Some(at) = records.torn_at {
        tracing::warn!(
            "{}: dropping an incomplete last record at byte {at} (its answer was never sent)",
            path.display()
        );
    }
    let mut out = Vec::new();
    for (at, payload) in records.payloads {
        let changes: KeptStdChanges = postcard::from_bytes(payload)
            .map_err(|e| format!("{} is unreadable at byte {at}: {e}", path.display()))?;
        out.extend(changes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use federation::pipeline::site::KeptStdEntry;

    fn keep(sub: u32, v: f64) -> (String, KeptStdEntry) {
        (
            "h".into(),
            KeptStdEntry::Keep {
                fit: learners::FitId { repeat: 0, fold: 1 },
                sub,
                std: models::lasso::KeptStandardisation {
                    mean: vec![v, -0.0, 1e-300],
                    sd: vec![1.5, 0.0, f64::MAX],
                },
            },
        )
    }

    #[test]
    fn records_read_back_exactly_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        assert!(read(&path).unwrap().is_empty());
        let first = vec![("h".to_string(), KeptStdEntry::Clear), keep(3, 0.1)];
        let second = vec![keep(4, std::f64::consts::PI)];
        append(&path, &first).unwrap();
        append(&path, &second).unwrap();
        let all: KeptStdChanges = first.iter().chain(&second).cloned().collect();
        assert_eq!(read(&path).unwrap(), all);

        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            first,
            "the torn last record is dropped"
        );

        let mut bad = full.clone();
        bad[10] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = read(&path).unwrap_err();
        assert!(
            err.contains("corrupt at byte 0") && err.contains("move it away"),
            "{err}"
        );

        truncate(&path).unwrap();
        assert!(read(&path).unwrap().is_empty());
    }
}
