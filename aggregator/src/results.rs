//! Writes a finished study's results into `<state_dir>/results/<study>/`.

use federation::engine::{RoundRecord, StudyOutput, StudyState};
use std::path::{Path, PathBuf};

/// The folder holding a study's results.
pub fn results_dir(state_dir: &Path, study: &str) -> PathBuf {
    state_dir.join("results").join(study)
}

/// Writes a file via a temporary name and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Forces a study's results folder to disk: every file in it, the folder itself and its entry
/// in `results/`. The server calls it before retiring the study from memory
/// ([`crate::coordinator::Coordinator::retire`]); after a crash a folder written by an earlier
/// run is synced again, since a file that exists is not necessarily on disk.
pub fn make_durable(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// `round,site,kind,bytes`: what each site sent in each round (the aggregator's view of the
/// traffic; each site's own audit log records the same from its side).
pub fn traffic_csv(rounds: &[RoundRecord]) -> String {
    let mut out = String::from("round,site,kind,bytes\n");
    for r in rounds {
        for (site, bytes) in &r.bytes {
            let kind = match (r.kinds.get(site), r.results.get(site)) {
                (Some(k), _) => k.as_str(),
                (None, Some(body)) => body.kind(),
                (None, None) => "unknown",
            };
            out.push_str(&format!("{},{site},{kind},{bytes}\n", r.round));
        }
    }
    out
}

/// Writes the results once (idempotent: a restart does not rewrite them). Not synced: see
/// [`make_durable`].
pub fn write_if_new(
    state_dir: &Path,
    study: &StudyState,
    rounds: &[RoundRecord],
) -> anyhow::Result<()> {
    let dir = results_dir(state_dir, study.spec.id.as_str());
    let marker = dir.join("study.json");
    if marker.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    if let Some(StudyOutput::Table1(t)) = &study.output {
        write_atomic(&dir.join("table1.csv"), t.to_csv().as_bytes())?;
        write_atomic(
            &dir.join("table1.json"),
            serde_json::to_string_pretty(t)?.as_bytes(),
        )?;
    }
    write_atomic(&dir.join("traffic.csv"), traffic_csv(rounds).as_bytes())?;
    // The analysis output as data, for `aggregator report` (which must not open the running
    // server's store).
    if let Some(output) = &study.output {
        write_atomic(
            &dir.join("output.json"),
            serde_json::to_string(output)?.as_bytes(),
        )?;
    }
    let summary = serde_json::json!({
        "id": study.spec.id,
        "hash": study.hash,
        "status": study.status.describe(),
        "rounds": study.round,
        "sites": study.sites,
        "spec": study.spec,
    });
    write_atomic(&marker, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(())
}
