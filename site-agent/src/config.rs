//! `site.toml`: where the aggregator is, which kit files to use, and where the data and policy are.

use federation::policy::SitePolicy;
use serde::Deserialize;
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
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field} points at {target}, which does not exist")]
    MissingFile {
        path: PathBuf,
        field: &'static str,
        target: PathBuf,
    },
    /// The site's private key is readable by other users: refused, not just warned about,
    /// because whoever reads it can answer studies as this site.
    #[error("{path}: {source}")]
    KeyExposed {
        path: PathBuf,
        source: protocol::tls::TlsError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    site_id: Option<String>,
    aggregator_url: String,
    #[serde(default)]
    aggregator_name: Option<String>,
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    policy: PathBuf,
    data_table: PathBuf,
    #[serde(default = "default_id_column")]
    id_column: String,
    #[serde(default = "default_label_column")]
    label_column: String,
    #[serde(default = "default_audit")]
    audit_log: PathBuf,
    #[serde(default = "default_state")]
    state_dir: PathBuf,
}

fn default_id_column() -> String {
    "patient_id".into()
}
fn default_label_column() -> String {
    "response".into()
}
fn default_audit() -> PathBuf {
    "audit.jsonl".into()
}
fn default_state() -> PathBuf {
    "state".into()
}

/// The loaded `site.toml`, with every path made absolute relative to the file's folder.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub path: PathBuf,
    /// Informational only: identity comes from the certificate.
    pub site_id: Option<String>,
    pub aggregator_url: String,
    pub aggregator_name: String,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub policy_path: PathBuf,
    pub policy: SitePolicy,
    pub data_table: PathBuf,
    pub id_column: String,
    pub label_column: String,
    pub audit_log: PathBuf,
    pub state_dir: PathBuf,
}

impl SiteConfig {
    /// Loads and checks `site.toml` and the policy file it names. Nothing is written. Stops at
    /// the first problem (the agent cannot run with any of them).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (cfg, mut problems) = Self::load_lenient(path)?;
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems.swap_remove(0))
        }
    }

    /// Like [`SiteConfig::load`] but collects every problem after the file itself parsed
    /// (missing kit files, an exposed key, a bad policy, an aggregator URL without a host), so
    /// `site-agent validate` can list them all at once. The returned config holds the paths as
    /// written (absolute) even when they do not exist, and the default policy when the policy
    /// file could not be read. `Err` only when `site.toml` cannot be read or parsed.
    pub fn load_lenient(path: &Path) -> Result<(Self, Vec<ConfigError>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut must_exist = |field: &'static str, p: PathBuf| {
            let ok = p.exists();
            if !ok {
                problems.push(ConfigError::MissingFile {
                    path: path.to_path_buf(),
                    field,
                    target: p.clone(),
                });
            }
            (p, ok)
        };
        let (policy_path, policy_ok) = must_exist("policy", abs(&raw.policy));
        let (ca_cert, _) = must_exist("ca_cert", abs(&raw.ca_cert));
        let (cert, _) = must_exist("cert", abs(&raw.cert));
        let (key, key_ok) = must_exist("key", abs(&raw.key));
        let (data_table, _) = must_exist("data_table", abs(&raw.data_table));
        let mut policy = SitePolicy::default();
        if policy_ok {
            match std::fs::read_to_string(&policy_path) {
                Err(source) => problems.push(ConfigError::Read {
                    path: policy_path.clone(),
                    source,
                }),
                Ok(t) => match SitePolicy::from_toml(&t) {
                    Ok(p) => policy = p,
                    Err(e) => problems.push(ConfigError::Parse {
                        path: policy_path.clone(),
                        message: e.to_string(),
                    }),
                },
            }
        }
        let aggregator_name = match raw.aggregator_name {
            Some(n) => n,
            None => host_of(&raw.aggregator_url).unwrap_or_else(|| {
                problems.push(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "aggregator_url {:?} has no host; write it as https://host:port",
                        raw.aggregator_url
                    ),
                });
                String::new()
            }),
        };
        if key_ok && let Err(source) = protocol::tls::check_key_permissions(&key) {
            problems.push(ConfigError::KeyExposed {
                path: path.to_path_buf(),
                source,
            });
        }
        let cfg = Self {
            path: path.to_path_buf(),
            site_id: raw.site_id,
            aggregator_url: raw.aggregator_url,
            aggregator_name,
            ca_cert,
            cert,
            key,
            policy_path,
            policy,
            data_table,
            id_column: raw.id_column,
            label_column: raw.label_column,
            audit_log: abs(&raw.audit_log),
            state_dir: abs(&raw.state_dir),
        };
        Ok((cfg, problems))
    }

    pub fn tls_files(&self) -> protocol::tls::ClientTlsFiles {
        protocol::tls::ClientTlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.aggregator_name.clone(),
        }
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split("://").nth(1)?;
    let hostport = rest.split('/').next()?;
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next()?
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_url() {
        assert_eq!(
            host_of("https://localhost:7443").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host_of("https://10.0.0.2:7443/x").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(host_of("https://[::1]:7443").as_deref(), Some("::1"));
        assert_eq!(host_of("localhost"), None);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("site.toml");
        std::fs::write(
            &p,
            "aggregator_url = \"https://localhost:1\"\nca_cert = \"ca.pem\"\ncert = \"s.pem\"\nkey = \"s.key\"\npolicy = \"policy.toml\"\ndata_table = \"d.csv\"\n",
        )
        .unwrap();
        let e = SiteConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("policy points at") && e.contains("policy.toml"),
            "{e}"
        );
        std::fs::write(dir.path().join("policy.toml"), "min_count = 5\n").unwrap();
        let e = SiteConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("ca_cert points at"), "{e}");
        for f in ["ca.pem", "s.pem", "d.csv"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("s.key");
            std::fs::write(&key, "x").unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = SiteConfig::load(&p).unwrap_err();
            assert!(matches!(e, ConfigError::KeyExposed { .. }), "{e}");
            let e = e.to_string();
            assert!(
                e.contains("mode 640") && e.contains(&format!("chmod 600 {}", key.display())),
                "{e}"
            );
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            SiteConfig::load(&p).unwrap();
        }
        std::fs::write(&p, "aggregator_url = 3").unwrap();
        assert!(matches!(
            SiteConfig::load(&p),
            Err(ConfigError::Parse { .. })
        ));
    }
}
