//! The consortium certificate authority: a directory holding the CA certificate and key, the index of
//! every certificate it issued, and the current CRL.
//!
//! Directory layout (created by [`Ca::init`]):
//! - `ca.pem`: the self-signed CA certificate (ECDSA P-256, basicConstraints CA with pathLen 0, key
//!   usages keyCertSign + cRLSign + digitalSignature). This is the trust anchor every party loads.
//! - `ca.key`: the CA private key (PKCS#8 PEM, mode 0600).
//! - `index.json`: [`Index`], every issued certificate with its status. Source of truth for the CRL.
//! - `crl.pem`: an X.509 v2 CRL signed by the CA, listing every revoked serial in the index. It is
//!   regenerated on each revocation with `nextUpdate = thisUpdate + 30 days` and an incremented
//!   CRL number. An empty CRL is written at init so the aggregator can always load one.
//! - `.lock`: advisory lock file; mutating commands hold an exclusive `flock` on it so two
//!   concurrent `certs` processes cannot lose each other's index updates.
//!
//! Every file is written atomically (temp file + rename). When a revocation is recorded, the index
//! is written before the CRL; if a crash falls between the two, [`Ca::open`] notices that the CRL
//! number on disk is behind the index and regenerates the CRL.
//!
//! Validity convention: `Validity::Days(n)` starts 5 minutes in the past (tolerates clock skew
//! between the CA host and the verifiers) and ends `n` days from now. Certificate times have
//! whole-second precision. A leaf never outlives the CA: `Days(n)` is capped at the CA's expiry,
//! explicit `Between` bounds past it are refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::error::{CertsError, Result};
use crate::fsutil::{KEY_MODE, PUBLIC_MODE, atomic_write, create_dir_all, read_text, set_mode};
use crate::identity::{
    self, AGGREGATOR_CN, AGGREGATOR_URI, CertKind, fingerprint_sha256, normalize_serial_hex,
    parse_der, serial_hex_from_bytes, site_uri, validate_site_id,
};
use crate::pemio::{KeyPermissions, key_permissions, parse_certs_pem};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the issued-certificate index.
pub const INDEX_FILE: &str = "index.json";
/// File name of the CRL.
pub const CRL_FILE: &str = "crl.pem";
/// File name of the advisory lock.
pub const LOCK_FILE: &str = ".lock";
/// Days between a CRL's thisUpdate and nextUpdate.
pub const CRL_VALIDITY_DAYS: i64 = 30;
/// Backdating of `not_before` for [`Validity::Days`], to tolerate clock skew.
pub const CLOCK_SKEW_MINUTES: i64 = 5;
/// Current `index.json` format number.
pub const INDEX_FORMAT: u32 = 1;
/// Id recorded in the index for aggregator certificates.
pub const AGGREGATOR_INDEX_ID: &str = "aggregator";

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 5 minutes ago until `n` days from now (capped at the CA's own expiry).
    Days(u32),
    /// Explicit bounds (tests use past or future windows for expired / not-yet-valid certs).
    Between {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity (must be after `not_before`).
        not_after: OffsetDateTime,
    },
}

impl Default for Validity {
    /// One year (365 days) from now.
    fn default() -> Self {
        Validity::Days(365)
    }
}

impl Validity {
    /// `n` days from now (see the module doc for the backdating).
    pub fn days(n: u32) -> Self {
        Validity::Days(n)
    }

    /// Explicit bounds.
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Validity::Between {
            not_before,
            not_after,
        }
    }

    /// Concrete `(not_before, not_after)`, truncated to whole seconds.
    pub fn resolve(&self, now: OffsetDateTime) -> Result<(OffsetDateTime, OffsetDateTime)> {
        let (nb, na) = match *self {
            Validity::Days(0) => {
                return Err(CertsError::Validity(
                    "0 days requested; use at least 1".into(),
                ));
            }
            Validity::Days(n) => (
                now - Duration::minutes(CLOCK_SKEW_MINUTES),
                now + Duration::days(i64::from(n)),
            ),
            Validity::Between {
                not_before,
                not_after,
            } => (not_before, not_after),
        };
        let nb = truncate_secs(nb);
        let na = truncate_secs(na);
        if na <= nb {
            return Err(CertsError::Validity(format!(
                "not_after {} is not after not_before {}",
                fmt_time(na),
                fmt_time(nb)
            )));
        }
        if nb.year() < 1950 || na.year() > 9999 {
            return Err(CertsError::Validity(
                "dates must lie between 1950 and 9999".into(),
            ));
        }
        Ok((nb, na))
    }
}

fn truncate_secs(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
}

/// RFC 3339 rendering used in messages and `index.json`.
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A freshly issued certificate and its new private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Private key, PKCS#8 PEM. Write it with mode 0600.
    pub key_pem: String,
    /// Serial, canonical hex (see [`crate::identity`]).
    pub serial_hex: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial_hex", &self.serial_hex)
            .field("key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

/// Result of [`Ca::renew`].
#[derive(Clone)]
pub struct Renewed {
    /// The renewed certificate, PEM.
    pub cert_pem: String,
    /// The renewed certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// A new private key if one was requested, else `None` (the old key is reused).
    pub key_pem: Option<String>,
    /// Serial of the new certificate.
    pub serial_hex: String,
    /// Serial of the certificate that was renewed (still valid until it expires or is revoked).
    pub old_serial_hex: String,
    /// Role of the certificate.
    pub kind: CertKind,
}

impl std::fmt::Debug for Renewed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewed")
            .field("serial_hex", &self.serial_hex)
            .field("old_serial_hex", &self.old_serial_hex)
            .field("kind", &self.kind)
            .field("new_key", &self.key_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1 reason codes fedrad uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given (omitted from the CRL entry, as RFC 5280 recommends).
    #[default]
    Unspecified,
    /// The private key leaked or may have.
    KeyCompromise,
    /// Replaced by a newer certificate.
    Superseded,
    /// The site left the consortium.
    CessationOfOperation,
}

impl RevocationReason {
    /// All reasons with their command-line names.
    pub const ALL: [RevocationReason; 4] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];

    /// The camelCase name used on the command line and in `index.json`.
    pub fn name(&self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = CertsError;
    fn from_str(s: &str) -> Result<Self> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                CertsError::Invalid(format!(
                    "unknown revocation reason {s:?}; use one of keyCompromise, superseded, cessationOfOperation, unspecified"
                ))
            })
    }
}

/// Which certificates [`Ca::revoke`] revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One certificate by serial (hex; colons and `0x` allowed).
    Serial(String),
    /// Every unrevoked certificate of this site.
    SiteId(String),
    /// The certificate in this PEM text (the first CERTIFICATE block).
    CertPem(String),
}

/// Status of an issued certificate at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Within its validity period and not revoked.
    Valid,
    /// Revoked (whatever its dates).
    Revoked,
    /// Past `not_after`.
    Expired,
    /// Before `not_before`.
    NotYetValid,
}

impl std::fmt::Display for CertStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
            CertStatus::Expired => "expired",
            CertStatus::NotYetValid => "not yet valid",
        })
    }
}

/// One issued certificate in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Serial, canonical hex.
    pub serial: String,
    /// Site or aggregator.
    pub kind: CertKind,
    /// Site id, or `aggregator`.
    pub id: String,
    /// For the aggregator: its DNS names and IP addresses. Empty for sites.
    #[serde(default)]
    pub names: Vec<String>,
    /// When the CA signed it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint_sha256: String,
    /// Whether the certificate is revoked.
    pub revoked: bool,
    /// When it was revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    #[serde(default)]
    pub revocation_reason: Option<RevocationReason>,
    /// Serial of the certificate this one renewed, if any.
    #[serde(default)]
    pub renewed_from: Option<String>,
}

impl IndexEntry {
    /// Status at time `now`.
    pub fn status(&self, now: OffsetDateTime) -> CertStatus {
        if self.revoked {
            CertStatus::Revoked
        } else if now > self.not_after {
            CertStatus::Expired
        } else if now < self.not_before {
            CertStatus::NotYetValid
        } else {
            CertStatus::Valid
        }
    }
}

/// Contents of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Format number ([`INDEX_FORMAT`]).
    pub format: u32,
    /// SHA-256 of the CA certificate this index belongs to (guards against mixing directories).
    pub ca_fingerprint_sha256: String,
    /// Number of the most recent CRL written.
    pub crl_number: u64,
    /// Every certificate issued, oldest first.
    pub certs: Vec<IndexEntry>,
}

impl Index {
    /// The entry with this canonical serial.
    pub fn find(&self, serial_hex: &str) -> Option<&IndexEntry> {
        self.certs.iter().find(|e| e.serial == serial_hex)
    }
}

/// Who a leaf certificate is for.
#[derive(Debug, Clone)]
enum LeafSubject {
    Site(String),
    Aggregator { dns: Vec<String>, ips: Vec<IpAddr> },
}

/// An opened CA directory. Holds the CA key in memory; mutating methods lock the directory and
/// reload the index from disk first, so several `Ca` values (or processes) on the same directory
/// do not lose each other's changes.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject: String,
    key_id: Option<Vec<u8>>,
    key_permissions: KeyPermissions,
    index: Index,
    crl_repaired: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("subject", &self.subject)
            .field("issued", &self.index.certs.len())
            .field("key", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA in `dir` (created if missing). Refuses if `dir` already holds a CA.
    pub fn init(dir: &Path, common_name: &str, validity_days: u32) -> Result<Ca> {
        Self::init_impl(dir, common_name, validity_days, false)
    }

    /// Like [`Ca::init`] but replaces an existing CA. The old `ca.pem`, `ca.key`, `index.json` and
    /// `crl.pem` are moved into `replaced-<unix time>/` inside `dir` rather than deleted.
    pub fn init_overwriting(dir: &Path, common_name: &str, validity_days: u32) -> Result<Ca> {
        Self::init_impl(dir, common_name, validity_days, true)
    }

    fn init_impl(dir: &Path, common_name: &str, validity_days: u32, force: bool) -> Result<Ca> {
        if common_name.trim().is_empty() {
            return Err(CertsError::Invalid("CA common name is empty".into()));
        }
        let existing: Vec<&str> = [CA_CERT_FILE, CA_KEY_FILE, INDEX_FILE]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !existing.is_empty() && !force {
            return Err(CertsError::CaExists(dir.to_path_buf()));
        }
        let fresh_dir = !dir.exists();
        create_dir_all(dir)?;
        if fresh_dir {
            // The directory holds the CA key: keep others out of it.
            set_mode(dir, 0o700)?;
        }
        let _lock = lock_dir(dir)?;
        if !existing.is_empty() {
            backup_existing(dir)?;
        }

        let now = truncate_secs(OffsetDateTime::now_utc());
        let (not_before, not_after) = Validity::Days(validity_days).resolve(now)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        // pathLen 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial(&[]));
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();

        let index = Index {
            format: INDEX_FORMAT,
            ca_fingerprint_sha256: fingerprint_sha256(&cert_der),
            crl_number: 0,
            certs: Vec::new(),
        };
        atomic_write(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        atomic_write(&dir.join(CA_CERT_FILE), cert_pem.as_bytes(), PUBLIC_MODE)?;
        let mut ca = Ca::from_parts(dir, cert_pem, key, index)?;
        ca.save_index()?;
        ca.bump_and_write_crl()?;
        Ok(ca)
    }

    /// Opens an existing CA directory. Errors name the missing or malformed file. If `crl.pem` is
    /// missing or older than the index (a crash between the two writes), it is regenerated; see
    /// [`Ca::crl_repaired`].
    pub fn open(dir: &Path) -> Result<Ca> {
        if !dir.is_dir() {
            return Err(CertsError::CaMissing(dir.to_path_buf()));
        }
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.exists() && !key_path.exists() {
            return Err(CertsError::CaMissing(dir.to_path_buf()));
        }
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let index = read_index(&dir.join(INDEX_FILE))?;
        let mut ca = Ca::from_parts(dir, cert_pem, key, index)?;
        if ca.index.ca_fingerprint_sha256 != fingerprint_sha256(&ca.cert_der) {
            return Err(CertsError::BadIndex {
                path: dir.join(INDEX_FILE),
                reason: format!("it belongs to a different CA than {}", cert_path.display()),
            });
        }
        if !ca.crl_is_current() {
            let _lock = ca.lock()?;
            ca.reload_index()?;
            if !ca.crl_is_current() {
                ca.bump_and_write_crl()?;
                ca.crl_repaired = true;
            }
        }
        Ok(ca)
    }

    fn from_parts(dir: &Path, cert_pem: String, key: KeyPair, index: Index) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_der = parse_certs_pem(&cert_pem, &cert_path)?.remove(0);
        let (not_before, not_after, subject, key_id) = {
            let x = parse_der(&cert_der).map_err(|e| CertsError::BadPem {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
            if x.public_key().raw != key.subject_public_key_info().as_slice() {
                return Err(CertsError::BadKey {
                    path: dir.join(CA_KEY_FILE),
                    reason: format!(
                        "it does not belong to the certificate {}",
                        cert_path.display()
                    ),
                });
            }
            let key_id = x
                .iter_extensions()
                .find_map(|ext| match ext.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                    _ => None,
                });
            (
                x.validity().not_before.to_datetime(),
                x.validity().not_after.to_datetime(),
                x.subject().to_string(),
                key_id,
            )
        };
        let key_permissions = key_permissions(&dir.join(CA_KEY_FILE))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            key,
            not_before,
            not_after,
            subject,
            key_id,
            key_permissions,
            index,
            crl_repaired: false,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
    /// Subject DN of the CA, e.g. `CN=fedrad consortium CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// Start of the CA's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    /// End of the CA's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// Path of `crl.pem`.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL_FILE)
    }
    /// Path of `ca.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }
    /// The index as last loaded or written by this value.
    pub fn index(&self) -> &Index {
        &self.index
    }
    /// Permissions of `ca.key` (warn if [`KeyPermissions::is_exposed`]).
    pub fn key_permissions(&self) -> KeyPermissions {
        self.key_permissions
    }
    /// True if [`Ca::open`] had to regenerate a missing or stale `crl.pem`.
    pub fn crl_repaired(&self) -> bool {
        self.crl_repaired
    }

    /// Re-reads `index.json` (e.g. after another process changed it).
    pub fn reload_index(&mut self) -> Result<()> {
        self.index = read_index(&self.dir.join(INDEX_FILE))?;
        Ok(())
    }

    /// True if `der` carries a valid signature by this CA's key and names this CA as issuer.
    /// Says nothing about validity dates or revocation.
    pub fn signed_this(&self, der: &[u8]) -> bool {
        let Ok(cert) = parse_der(der) else {
            return false;
        };
        let Ok(ca) = parse_der(&self.cert_der) else {
            return false;
        };
        cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Issues a site certificate (see [`crate::identity`] for the profile) with a new key.
    pub fn issue_site(&mut self, site_id: &str, validity: Validity) -> Result<IssuedCert> {
        validate_site_id(site_id)?;
        self.issue_new(LeafSubject::Site(site_id.to_string()), validity, None)
    }

    /// Issues the aggregator's server certificate for these DNS names and IP addresses.
    pub fn issue_aggregator(
        &mut self,
        dns: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<IssuedCert> {
        let subject = aggregator_subject(dns, ips)?;
        self.issue_new(subject, validity, None)
    }

    fn issue_new(
        &mut self,
        subject: LeafSubject,
        validity: Validity,
        renewed_from: Option<String>,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let (cert_pem, cert_der, serial_hex) =
            self.sign_and_record(&subject, &key, validity, renewed_from)?;
        Ok(IssuedCert {
            cert_pem,
            cert_der,
            key_pem: key.serialize_pem(),
            serial_hex,
        })
    }

    /// Signs a leaf for `public_key`, records it in the index (under the lock) and returns
    /// `(pem, der, serial_hex)`.
    fn sign_and_record(
        &mut self,
        subject: &LeafSubject,
        public_key: &impl PublicKeyData,
        validity: Validity,
        renewed_from: Option<String>,
    ) -> Result<(String, CertificateDer<'static>, String)> {
        let now = truncate_secs(OffsetDateTime::now_utc());
        let (not_before, mut not_after) = validity.resolve(now)?;
        if not_after > self.not_after {
            match validity {
                // "n days" means "as long as possible up to n days": cap at the CA's expiry,
                // since a leaf cannot verify once its CA has expired anyway.
                Validity::Days(_) => not_after = self.not_after,
                Validity::Between { .. } => {
                    return Err(CertsError::Validity(format!(
                        "the certificate would end {} but the CA itself expires {}",
                        fmt_time(not_after),
                        fmt_time(self.not_after)
                    )));
                }
            }
            if not_after <= not_before {
                return Err(CertsError::Validity(format!(
                    "the CA expired at {}; create a new CA with `certs init --force`",
                    fmt_time(self.not_after)
                )));
            }
        }
        let _lock = self.lock()?;
        self.reload_index()?;
        let taken: Vec<&str> = self.index.certs.iter().map(|e| e.serial.as_str()).collect();
        let serial = random_serial(&taken);
        let serial_hex = serial_hex_from_bytes(&serial.to_bytes());
        let params = leaf_params(subject, not_before, not_after, serial)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let cert = params.signed_by(public_key, &issuer)?;
        let (kind, id, names) = match subject {
            LeafSubject::Site(id) => (CertKind::Site, id.clone(), Vec::new()),
            LeafSubject::Aggregator { dns, ips } => (
                CertKind::Aggregator,
                AGGREGATOR_INDEX_ID.to_string(),
                dns.iter()
                    .cloned()
                    .chain(ips.iter().map(|ip| ip.to_string()))
                    .collect(),
            ),
        };
        self.index.certs.push(IndexEntry {
            serial: serial_hex.clone(),
            kind,
            id,
            names,
            issued_at: now,
            not_before,
            not_after,
            fingerprint_sha256: fingerprint_sha256(cert.der()),
            revoked: false,
            revoked_at: None,
            revocation_reason: None,
            renewed_from,
        });
        self.save_index()?;
        Ok((cert.pem(), cert.der().clone(), serial_hex))
    }

    /// Issues a new certificate with the same role and identity (subject, SANs, EKU) as
    /// `cert_pem`, under a new serial. Reuses the certificate's public key unless `new_key`, in
    /// which case a fresh key is returned in [`Renewed::key_pem`]. The old certificate is not
    /// revoked. Refuses certificates this CA did not issue and revoked ones.
    pub fn renew(&mut self, cert_pem: &str, validity: Validity, new_key: bool) -> Result<Renewed> {
        let der = parse_certs_pem(cert_pem, Path::new("<certificate to renew>"))?.remove(0);
        let (old_serial, subject, spki_der) = {
            let x = parse_der(&der)?;
            let serial = serial_hex_from_bytes(x.raw_serial());
            (serial, leaf_subject_of(&x)?, x.public_key().raw.to_vec())
        };
        self.check_ours(&der, &old_serial)?;
        self.reload_index()?;
        if let Some(e) = self.index.find(&old_serial)
            && e.revoked
        {
            return Err(CertsError::AlreadyRevoked {
                serial: old_serial,
                when: e.revoked_at.map(fmt_time).unwrap_or_default(),
            });
        }
        let kind = match subject {
            LeafSubject::Site(_) => CertKind::Site,
            LeafSubject::Aggregator { .. } => CertKind::Aggregator,
        };
        if new_key {
            let issued = self.issue_new(subject, validity, Some(old_serial.clone()))?;
            Ok(Renewed {
                cert_pem: issued.cert_pem,
                cert_der: issued.cert_der,
                key_pem: Some(issued.key_pem),
                serial_hex: issued.serial_hex,
                old_serial_hex: old_serial,
                kind,
            })
        } else {
            let public = SubjectPublicKeyInfo::from_der(&spki_der)?;
            let (cert_pem, cert_der, serial_hex) =
                self.sign_and_record(&subject, &public, validity, Some(old_serial.clone()))?;
            Ok(Renewed {
                cert_pem,
                cert_der,
                key_pem: None,
                serial_hex,
                old_serial_hex: old_serial,
                kind,
            })
        }
    }

    /// Fails unless `der` is signed by this CA and its serial is in the index.
    fn check_ours(&self, der: &[u8], serial: &str) -> Result<()> {
        if !self.signed_this(der) {
            return Err(CertsError::NotIssuedHere {
                serial: serial.to_string(),
                reason: format!(
                    "its signature does not verify with {}",
                    self.cert_path().display()
                ),
            });
        }
        let index = read_index(&self.dir.join(INDEX_FILE))?;
        if index.find(serial).is_none() {
            return Err(CertsError::NotIssuedHere {
                serial: serial.to_string(),
                reason: format!(
                    "its serial is not in {}",
                    self.dir.join(INDEX_FILE).display()
                ),
            });
        }
        Ok(())
    }

    /// Revokes the selected certificates, records `reason` and the time in the index and
    /// regenerates `crl.pem`. Returns the serials revoked by this call.
    pub fn revoke(&mut self, selector: &Selector, reason: RevocationReason) -> Result<Vec<String>> {
        let pem_serial = match selector {
            Selector::CertPem(pem) => {
                let der = parse_certs_pem(pem, Path::new("<certificate to revoke>"))?.remove(0);
                let serial = identity::serial_hex_from_der(&der)?;
                self.check_ours(&der, &serial)?;
                Some(serial)
            }
            _ => None,
        };
        let _lock = self.lock()?;
        self.reload_index()?;
        let now = truncate_secs(OffsetDateTime::now_utc());
        let targets: Vec<usize> = match selector {
            Selector::Serial(_) | Selector::CertPem(_) => {
                let serial = match (selector, pem_serial) {
                    (_, Some(s)) => s,
                    (Selector::Serial(text), None) => normalize_serial_hex(text)?,
                    _ => unreachable!("CertPem always yields a serial"),
                };
                let i = self
                    .index
                    .certs
                    .iter()
                    .position(|e| e.serial == serial)
                    .ok_or_else(|| {
                        CertsError::NothingToRevoke(format!(
                            "serial {serial} is not in {}",
                            self.dir.join(INDEX_FILE).display()
                        ))
                    })?;
                let e = &self.index.certs[i];
                if e.revoked {
                    return Err(CertsError::AlreadyRevoked {
                        serial,
                        when: e.revoked_at.map(fmt_time).unwrap_or_default(),
                    });
                }
                vec![i]
            }
            Selector::SiteId(id) => {
                validate_site_id(id)?;
                let all: Vec<usize> = (0..self.index.certs.len())
                    .filter(|&i| {
                        let e = &self.index.certs[i];
                        e.kind == CertKind::Site && e.id == *id
                    })
                    .collect();
                if all.is_empty() {
                    return Err(CertsError::NothingToRevoke(format!(
                        "no certificate was ever issued to site {id:?}"
                    )));
                }
                let open: Vec<usize> = all
                    .into_iter()
                    .filter(|&i| !self.index.certs[i].revoked)
                    .collect();
                if open.is_empty() {
                    return Err(CertsError::NothingToRevoke(format!(
                        "every certificate of site {id:?} is already revoked"
                    )));
                }
                open
            }
        };
        let mut serials = Vec::with_capacity(targets.len());
        for i in targets {
            let e = &mut self.index.certs[i];
            e.revoked = true;
            e.revoked_at = Some(now);
            e.revocation_reason = Some(reason);
            serials.push(e.serial.clone());
        }
        // Index first, then the CRL: `open` repairs a CRL that lags behind the index.
        self.bump_and_write_crl()?;
        Ok(serials)
    }

    /// Writes a fresh CRL (new number, thisUpdate now, nextUpdate +30 days) without revoking
    /// anything. Run it at least monthly if verifiers enforce CRL expiry.
    pub fn refresh_crl(&mut self) -> Result<u64> {
        let _lock = self.lock()?;
        self.reload_index()?;
        self.bump_and_write_crl()?;
        Ok(self.index.crl_number)
    }

    /// Increments the CRL number, saves the index, then signs and writes `crl.pem`.
    /// Caller holds the lock.
    fn bump_and_write_crl(&mut self) -> Result<()> {
        self.index.crl_number += 1;
        self.save_index()?;
        let now = truncate_secs(OffsetDateTime::now_utc());
        let mut revoked_certs = Vec::new();
        for e in self.index.certs.iter().filter(|e| e.revoked) {
            let bytes = hex::decode(&e.serial).map_err(|_| CertsError::BadIndex {
                path: self.dir.join(INDEX_FILE),
                reason: format!("serial {:?} is not hex", e.serial),
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: e.revoked_at.unwrap_or(now),
                reason_code: e.revocation_reason.map(RevocationReason::to_rcgen),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(CRL_VALIDITY_DAYS),
            crl_number: SerialNumber::from(self.index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            // The CRL's authority key identifier must equal the CA's subject key identifier.
            key_identifier_method: match &self.key_id {
                Some(k) => KeyIdMethod::PreSpecified(k.clone()),
                None => KeyIdMethod::Sha256,
            },
        };
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let crl = params.signed_by(&issuer)?;
        atomic_write(&self.crl_path(), crl.pem()?.as_bytes(), PUBLIC_MODE)
    }

    /// True if `crl.pem` exists, parses, and carries the CRL number recorded in the index.
    fn crl_is_current(&self) -> bool {
        crl_number_on_disk(&self.crl_path()) == Some(self.index.crl_number)
    }

    fn save_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        let mut json =
            serde_json::to_string_pretty(&self.index).map_err(|e| CertsError::BadIndex {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        json.push('\n');
        atomic_write(&path, json.as_bytes(), PUBLIC_MODE)
    }

    fn lock(&self) -> Result<File> {
        lock_dir(&self.dir)
    }
}

/// Takes the exclusive advisory lock of a CA directory (released when the file is dropped).
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| CertsError::Write {
            path: path.clone(),
            err,
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(CertsError::Locked(path)),
        Err(TryLockError::Error(err)) => Err(CertsError::Write { path, err }),
    }
}

/// Moves an existing CA's files into `replaced-<unix time>/` (used by `init --force`).
fn backup_existing(dir: &Path) -> Result<()> {
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let backup = dir.join(format!("replaced-{stamp}"));
    create_dir_all(&backup)?;
    set_mode(&backup, 0o700)?;
    for f in [CA_CERT_FILE, CA_KEY_FILE, INDEX_FILE, CRL_FILE] {
        let from = dir.join(f);
        if from.exists() {
            std::fs::rename(&from, backup.join(f)).map_err(|err| CertsError::Write {
                path: from.clone(),
                err,
            })?;
        }
    }
    Ok(())
}

fn read_index(path: &Path) -> Result<Index> {
    let text = read_text(path)?;
    let index: Index = serde_json::from_str(&text).map_err(|e| CertsError::BadIndex {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if index.format != INDEX_FORMAT {
        return Err(CertsError::BadIndex {
            path: path.to_path_buf(),
            reason: format!(
                "format {} is not supported (expected {INDEX_FORMAT})",
                index.format
            ),
        });
    }
    Ok(index)
}

/// CRL number of the first CRL in a PEM file, or `None` if missing/unparsable.
pub(crate) fn crl_number_on_disk(path: &Path) -> Option<u64> {
    let crls = crate::pemio::load_crls(path).ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(crls.first()?).ok()?;
    let n = crl.crl_number()?;
    u64::try_from(n).ok()
}

/// A random positive serial of 16 bytes (128 bits, above the 64 bits CA/B Forum asks for). The
/// first byte is in 1..=0x7f so the DER integer needs no padding byte and the canonical hex is
/// always 32 digits.
fn random_serial(taken: &[&str]) -> SerialNumber {
    use rand::RngCore;
    loop {
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b[0] = (b[0] & 0x7f).max(1);
        let hex = hex::encode(b);
        if !taken.contains(&hex.as_str()) {
            return SerialNumber::from_slice(&b);
        }
    }
}

fn ia5(s: &str) -> Result<Ia5String> {
    Ia5String::try_from(s).map_err(|e| CertsError::Invalid(format!("{s:?}: {e}")))
}

fn aggregator_subject(dns: &[String], ips: &[IpAddr]) -> Result<LeafSubject> {
    if dns.is_empty() && ips.is_empty() {
        return Err(CertsError::Invalid(
            "the aggregator certificate needs at least one DNS name or IP address (e.g. --dns localhost --ip 127.0.0.1)".into(),
        ));
    }
    for name in dns {
        rustls::pki_types::DnsName::try_from(name.as_str()).map_err(|_| {
            CertsError::Invalid(format!(
                "{name:?} is not a valid DNS name (use --ip for addresses)"
            ))
        })?;
        if name.parse::<IpAddr>().is_ok() {
            return Err(CertsError::Invalid(format!(
                "{name:?} is an IP address; pass it with --ip"
            )));
        }
    }
    Ok(LeafSubject::Aggregator {
        dns: dns.to_vec(),
        ips: ips.to_vec(),
    })
}

/// Certificate parameters for a leaf, following the profile in [`crate::identity`].
fn leaf_params(
    subject: &LeafSubject,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: SerialNumber,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    match subject {
        LeafSubject::Site(id) => {
            dn.push(DnType::CommonName, id.as_str());
            p.subject_alt_names = vec![SanType::URI(ia5(&site_uri(id))?)];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        LeafSubject::Aggregator { dns, ips } => {
            dn.push(DnType::CommonName, AGGREGATOR_CN);
            let mut sans = Vec::new();
            for d in dns {
                sans.push(SanType::DnsName(ia5(d)?));
            }
            for ip in ips {
                sans.push(SanType::IpAddress(*ip));
            }
            sans.push(SanType::URI(ia5(AGGREGATOR_URI)?));
            p.subject_alt_names = sans;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(serial);
    Ok(p)
}

/// Reconstructs who a fedrad leaf certificate is for (used by renew).
fn leaf_subject_of(x: &X509Certificate<'_>) -> Result<LeafSubject> {
    match identity::kind_from_parsed(x) {
        Some(CertKind::Site) => Ok(LeafSubject::Site(identity::site_id_from_parsed(x)?)),
        Some(CertKind::Aggregator) => {
            let mut dns = Vec::new();
            let mut ips = Vec::new();
            if let Ok(Some(san)) = x.subject_alternative_name() {
                for g in &san.value.general_names {
                    match g {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("len 4"))),
                            16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("len 16"))),
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
            aggregator_subject(&dns, &ips)
        }
        None => Err(CertsError::Invalid(
            "the certificate is neither a fedrad site nor the aggregator (no urn:fedrad: URI SAN)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_days_backdates_and_rejects_zero() {
        let now = time::macros::datetime!(2026-01-01 12:00:00.5 UTC);
        let (nb, na) = Validity::Days(10).resolve(now).unwrap();
        assert_eq!(nb, time::macros::datetime!(2026-01-01 11:55:00 UTC));
        assert_eq!(na, time::macros::datetime!(2026-01-11 12:00:00 UTC));
        assert!(Validity::Days(0).resolve(now).is_err());
        assert!(Validity::between(now, now).resolve(now).is_err());
    }

    #[test]
    fn random_serials_are_positive_and_distinct() {
        let a = random_serial(&[]).to_bytes();
        let b = random_serial(&[]).to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] >= 1 && a[0] <= 0x7f);
        assert_ne!(a, b);
    }

    #[test]
    fn reason_names_round_trip() {
        for r in RevocationReason::ALL {
            assert_eq!(r.name().parse::<RevocationReason>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.name()));
        }
        assert!("bogus".parse::<RevocationReason>().is_err());
    }

    #[test]
    fn aggregator_names_are_checked() {
        assert!(aggregator_subject(&[], &[]).is_err());
        assert!(aggregator_subject(&["bad name".into()], &[]).is_err());
        assert!(aggregator_subject(&["127.0.0.1".into()], &[]).is_err());
        assert!(aggregator_subject(&["localhost".into()], &[]).is_ok());
    }
}
