//! Consortium PKI for fedrad: one certificate authority that issues the aggregator's server
//! certificate and one client certificate per hospital site, plus revocation (CRL) and inspection.
//! Pure Rust (rcgen, x509-parser, rustls/webpki with ring); no OpenSSL.
//!
//! # Identity scheme
//! See [`identity`]: a site is named by the URI SAN `urn:fedrad:site:<ID>` (CN = id, EKU
//! clientAuth); the aggregator by CN `fedrad aggregator`, its DNS/IP SANs and the URI
//! `urn:fedrad:aggregator` (EKU serverAuth). After an mTLS handshake, the aggregator calls
//! [`identity::site_id_from_der`] on the peer certificate to learn which site is talking.
//!
//! # Command line
//! ```text
//! certs init --dir ca [--cn "fedrad consortium CA"] [--days 3650] [--force]
//! certs issue-aggregator --ca ca --out agg-kit [--dns localhost ...] [--ip 127.0.0.1 ...] [--days 365]
//! certs issue-site --ca ca --site-id S01 --out kits/ [--aggregator-url https://localhost:7443] [--days 365]
//! certs renew --ca ca --cert kits/S01/site.pem [--days 365] [--new-key] [--key PATH]
//! certs revoke --ca ca (--serial HEX | --site-id ID | --cert PATH) [--reason keyCompromise|superseded|cessationOfOperation|unspecified]
//! certs inspect kits/S01/site.pem [--ca ca]
//! certs list --ca ca
//! certs crl --ca ca            # re-sign crl.pem with fresh dates
//! ```
//! Exit codes: 0 success, 1 error (one line on stderr, naming the file or value at fault),
//! 2 usage error.
//!
//! After `certs revoke`, the aggregator must load the new `crl.pem` (copy it over the kit's
//! snapshot, or point the aggregator at the CA's file) and reload; until then the revoked site can
//! still connect.
//!
//! # Library
//! ```no_run
//! use certs::{Ca, Validity, Selector, RevocationReason};
//! # fn main() -> certs::Result<()> {
//! let dir = std::path::Path::new("ca");
//! let mut ca = Ca::init(dir, "fedrad consortium CA", 3650)?;
//! let agg = ca.issue_aggregator(&["localhost".into()], &["127.0.0.1".parse().unwrap()], Validity::default())?;
//! let kit = ca.write_site_kit("S01", std::path::Path::new("kits"), "https://localhost:7443", Validity::days(365))?;
//! let revoked = ca.revoke(&Selector::SiteId("S01".into()), RevocationReason::CessationOfOperation)?;
//! let crls = certs::load_crls(&ca.crl_path())?;
//! # let _ = (agg, kit, revoked, crls); Ok(()) }
//! ```
//! TLS side: [`tls::server_config_from_files`] / [`tls::client_config_from_files`] build rustls
//! configurations that enforce the CRL; [`tls::client_verifier`] / [`tls::server_verifier`] give
//! the bare verifiers.

pub mod attest;
pub mod ca;
pub mod cli;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod inspect;
pub mod kit;
pub mod pemio;
pub mod tls;

pub use ca::{
    Ca, CertStatus, Index, IndexEntry, IssuedCert, Renewed, RevocationReason, Selector, Validity,
};
pub use error::{CertsError, Result};
pub use identity::{
    CertKind, IdentityError, fingerprint_sha256, serial_hex_from_der, site_id_from_der,
    validate_site_id,
};
pub use inspect::{CertInfo, inspect};
pub use pemio::{KeyPermissions, LoadedKey, load_certs_pem, load_crls, load_key_pem};

/// Installs rustls' ring crypto provider as the process default, once. Safe to call many times
/// and from several threads; if another provider is already installed it is left in place.
pub fn ensure_ring_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider was already installed (possibly by another crate): fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
