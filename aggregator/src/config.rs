//! `aggregator.toml`: where to listen, the TLS files, the enrolled sites, the round deadline and
//! the snapshot interval.

use federation::SiteId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: SocketAddr,
    state_dir: PathBuf,
    enrolled_sites: Vec<String>,
    #[serde(default = "default_deadline")]
    round_deadline_secs: f64,
    #[serde(default = "default_snapshot_interval")]
    snapshot_interval_secs: f64,
    tls: RawTls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    crl: Option<PathBuf>,
}

fn default_deadline() -> f64 {
    600.0
}

fn default_snapshot_interval() -> f64 {
    crate::coordinator::DEFAULT_SNAPSHOT_INTERVAL_MS as f64 / 1000.0
}

/// The loaded configuration; paths are absolute (relative ones are taken from the file's folder).
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub enrolled_sites: Vec<SiteId>,
    /// How long a round waits for every site before the study is paused naming the missing ones.
    pub round_deadline_ms: u64,
    /// How often a running study's whole state is written; the rounds in between are replayed
    /// from the stored results after a restart (see `coordinator.rs`).
    pub snapshot_interval_ms: u64,
    pub tls: protocol::tls::ServerTlsFiles,
}

impl AggregatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: Raw = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let existing = |field: &str, p: PathBuf| {
            if p.exists() {
                Ok(p)
            } else {
                Err(invalid(format!(
                    "{field} points at {}, which does not exist",
                    p.display()
                )))
            }
        };
        let mut sites = Vec::new();
        for s in raw.enrolled_sites {
            sites.push(SiteId::new(s).map_err(|e| invalid(format!("enrolled_sites: {e}")))?);
        }
        if sites.is_empty() {
            return Err(invalid(
                "enrolled_sites is empty; list the site ids of the kits you issued".into(),
            ));
        }
        if !raw.round_deadline_secs.is_finite() || raw.round_deadline_secs <= 0.0 {
            return Err(invalid("round_deadline_secs must be positive".into()));
        }
        if !raw.snapshot_interval_secs.is_finite() || raw.snapshot_interval_secs < 0.0 {
            return Err(invalid(
                "snapshot_interval_secs must be zero (a snapshot after every round) or positive"
                    .into(),
            ));
        }
        Ok(Self {
            listen: raw.listen,
            state_dir: abs(&raw.state_dir),
            enrolled_sites: sites,
            round_deadline_ms: (raw.round_deadline_secs * 1000.0) as u64,
            snapshot_interval_ms: (raw.snapshot_interval_secs * 1000.0) as u64,
            tls: protocol::tls::ServerTlsFiles {
                ca_cert: existing("tls.ca_cert", abs(&raw.tls.ca_cert))?,
                cert: existing("tls.cert", abs(&raw.tls.cert))?,
                key: existing("tls.key", abs(&raw.tls.key))?,
                crl: match raw.tls.crl {
                    Some(c) => Some(existing("tls.crl", abs(&c))?),
                    None => None,
                },
            },
        })
    }
}
