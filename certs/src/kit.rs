//! Site and aggregator "kits": the folder of files an operator hands to a hospital or installs on
//! the aggregator host (CA certificate, own certificate and key, example configuration).
//!
//! Site kit `<out_dir>/<SITE_ID>/`: `ca.pem`, `site.pem`, `site.key` (0600), `site.toml`,
//! `policy.toml`. Aggregator kit `<out_dir>/`: `ca.pem`, `aggregator.pem`, `aggregator.key` (0600),
//! `crl.pem` (a snapshot of the CA's CRL) and `README.txt`. Relative paths inside `site.toml` are
//! relative to the folder holding `site.toml`. Existing certificates or keys are never
//! overwritten (use `certs renew`); existing `site.toml` / `policy.toml` are kept as edited.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ca::{Ca, Validity};
use crate::error::{CertsError, Result};
use crate::fsutil::{KEY_MODE, PUBLIC_MODE, atomic_write, create_dir_all};
use crate::identity::validate_site_id;

/// Site certificate file name inside a site kit.
pub const SITE_CERT_FILE: &str = "site.pem";
/// Site key file name inside a site kit.
pub const SITE_KEY_FILE: &str = "site.key";
/// Site agent configuration file name.
pub const SITE_TOML_FILE: &str = "site.toml";
/// Disclosure policy file name.
pub const POLICY_TOML_FILE: &str = "policy.toml";
/// Aggregator certificate file name inside an aggregator kit.
pub const AGGREGATOR_CERT_FILE: &str = "aggregator.pem";
/// Aggregator key file name inside an aggregator kit.
pub const AGGREGATOR_KEY_FILE: &str = "aggregator.key";
/// Default aggregator URL written into site kits.
pub const DEFAULT_AGGREGATOR_URL: &str = "https://localhost:7443";

/// The example `policy.toml` written into every site kit: the most restrictive settings.
pub const POLICY_TOML: &str = r#"# What this site lets leave. Everything not allowed here stays inside the hospital.
min_count = 5                 # no aggregate over fewer patients leaves the site
allow_all_studies = false     # if false, only the study hashes below are answered
allowed_studies = []          # e.g. ["3f2a..."] (the study hash printed by `aggregator submit`)
release_predictions = false   # per-patient predictions never leave unless true
share_models = false          # fitted base models stay home unless true
max_params_per_row = 0.33     # disclosure guard for cross-product matrices (p <= ratio * n; DataSHIELD default)
"#;

/// The example `site.toml` for an aggregator URL. `aggregator_name` is the URL's host, i.e. the
/// name the agent checks on the aggregator's certificate.
pub fn site_toml(aggregator_url: &str) -> Result<String> {
    let host = aggregator_host(aggregator_url)?;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    Ok(format!(
        r#"# fedrad site agent configuration. Identity comes from site.pem, never from this file.
aggregator_url = {url}
aggregator_name = {host}        # TLS name on the aggregator's certificate
ca_cert = "ca.pem"
cert = "site.pem"
key = "site.key"
policy = "policy.toml"
data_table = "data/cohort.csv"       # this hospital's table: one row per patient
id_column = "patient_id"
label_column = "response"
audit_log = "audit.jsonl"
state_dir = "state"
"#,
        url = q(aggregator_url),
        host = q(&host),
    ))
}

/// Host part of an `https://host[:port][/path]` URL (IPv6 literals without brackets).
pub fn aggregator_host(url: &str) -> Result<String> {
    let bad = |why: &str| {
        CertsError::Invalid(format!(
            "aggregator URL {url:?} {why}; expected e.g. https://aggregator.example.org:7443"
        ))
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("must not carry user credentials"));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("has an unclosed '['"))?;
        v6[..end].to_string()
    } else {
        authority.split(':').next().unwrap_or_default().to_string()
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.parse::<IpAddr>().is_err()
        && rustls::pki_types::DnsName::try_from(host.as_str()).is_err()
    {
        return Err(bad(
            "has a host that is neither a DNS name nor an IP address",
        ));
    }
    Ok(host)
}

fn refuse_existing(paths: &[PathBuf]) -> Result<()> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(CertsError::KitExists(p.clone())),
        None => Ok(()),
    }
}

impl Ca {
    /// Issues a site certificate and writes the kit folder `<out_dir>/<site_id>/`; returns it.
    pub fn write_site_kit(
        &mut self,
        site_id: &str,
        out_dir: &Path,
        aggregator_url: &str,
        validity: Validity,
    ) -> Result<PathBuf> {
        validate_site_id(site_id)?;
        // Check everything that can fail before a certificate is recorded in the index.
        let toml_text = site_toml(aggregator_url)?;
        let kit = out_dir.join(site_id);
        let cert_path = kit.join(SITE_CERT_FILE);
        let key_path = kit.join(SITE_KEY_FILE);
        refuse_existing(&[cert_path.clone(), key_path.clone()])?;
        create_dir_all(&kit)?;
        let issued = self.issue_site(site_id, validity)?;
        atomic_write(&key_path, issued.key_pem.as_bytes(), KEY_MODE)?;
        atomic_write(&cert_path, issued.cert_pem.as_bytes(), PUBLIC_MODE)?;
        atomic_write(&kit.join("ca.pem"), self.cert_pem().as_bytes(), PUBLIC_MODE)?;
        for (name, text) in [
            (SITE_TOML_FILE, toml_text.as_str()),
            (POLICY_TOML_FILE, POLICY_TOML),
        ] {
            let p = kit.join(name);
            if !p.exists() {
                atomic_write(&p, text.as_bytes(), PUBLIC_MODE)?;
            }
        }
        Ok(kit)
    }

    /// Issues the aggregator certificate and writes its kit into `out_dir`; returns `out_dir`.
    pub fn write_aggregator_kit(
        &mut self,
        out_dir: &Path,
        dns: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<PathBuf> {
        let cert_path = out_dir.join(AGGREGATOR_CERT_FILE);
        let key_path = out_dir.join(AGGREGATOR_KEY_FILE);
        refuse_existing(&[cert_path.clone(), key_path.clone()])?;
        create_dir_all(out_dir)?;
        let issued = self.issue_aggregator(dns, ips, validity)?;
        atomic_write(&key_path, issued.key_pem.as_bytes(), KEY_MODE)?;
        atomic_write(&cert_path, issued.cert_pem.as_bytes(), PUBLIC_MODE)?;
        atomic_write(
            &out_dir.join("ca.pem"),
            self.cert_pem().as_bytes(),
            PUBLIC_MODE,
        )?;
        let crl = crate::fsutil::read_text(&self.crl_path())?;
        atomic_write(&out_dir.join("crl.pem"), crl.as_bytes(), PUBLIC_MODE)?;
        let readme = format!(
            "fedrad aggregator kit\n\
             ca.pem          consortium CA certificate (trust anchor for site certificates)\n\
             aggregator.pem  this server's certificate (serial {serial})\n\
             aggregator.key  its private key: keep mode 0600, never copy it off this host\n\
             crl.pem         snapshot of the CA's revocation list at issue time.\n\
             \n\
             After every `certs revoke`, copy {crl} here again (or point the aggregator at that\n\
             file directly), then restart or reload the aggregator: a stale CRL lets a revoked\n\
             site keep connecting.\n",
            serial = issued.serial_hex,
            crl = self.crl_path().display(),
        );
        atomic_write(&out_dir.join("README.txt"), readme.as_bytes(), PUBLIC_MODE)?;
        Ok(out_dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_urls() {
        assert_eq!(
            aggregator_host("https://localhost:7443").unwrap(),
            "localhost"
        );
        assert_eq!(
            aggregator_host("https://agg.example.org/x").unwrap(),
            "agg.example.org"
        );
        assert_eq!(aggregator_host("https://127.0.0.1:1").unwrap(), "127.0.0.1");
        assert_eq!(aggregator_host("https://[::1]:7443").unwrap(), "::1");
        assert!(aggregator_host("http://localhost").is_err());
        assert!(aggregator_host("https://").is_err());
        assert!(aggregator_host("https://u:p@host").is_err());
    }

    #[test]
    fn site_toml_matches_template_and_parses() {
        let t = site_toml("https://localhost:7443").unwrap();
        assert!(t.contains("aggregator_url = \"https://localhost:7443\"\n"));
        assert!(t.contains("aggregator_name = \"localhost\"        # TLS name"));
        let v: toml::Table = t.parse().unwrap();
        assert_eq!(v["aggregator_name"].as_str(), Some("localhost"));
        assert_eq!(v["state_dir"].as_str(), Some("state"));
        let p: toml::Table = POLICY_TOML.parse().unwrap();
        assert_eq!(p["min_count"].as_integer(), Some(5));
        assert_eq!(p["max_params_per_row"].as_float(), Some(0.33));
        assert_eq!(p["allowed_studies"].as_array().map(Vec::len), Some(0));
    }
}
