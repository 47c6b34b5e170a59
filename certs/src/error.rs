//! Error type of the `certs` crate: every variant says what is wrong and, where possible, how to fix it.

use std::path::PathBuf;

use crate::identity::IdentityError;

/// Errors from the consortium PKI library. Messages are one line and name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The CA directory (or its `ca.pem`/`ca.key`) does not exist.
    #[error(
        "no CA at {0}: the directory or its ca.pem/ca.key is missing; create one with `certs init --dir <DIR>`"
    )]
    CaMissing(PathBuf),
    /// `init` would overwrite an existing CA.
    #[error(
        "{0} already holds a CA; pass --force to replace it (every certificate it issued stops verifying)"
    )]
    CaExists(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {err}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying IO error (kept out of `source()` so `{:#}` does not print it twice).
        err: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {path}: {err}")]
    Write {
        /// File that failed.
        path: PathBuf,
        /// Underlying IO error (kept out of `source()` so `{:#}` does not print it twice).
        err: std::io::Error,
    },
    /// A private key file is not a usable PEM key.
    #[error(
        "{path} is not a valid private key PEM ({reason}); restore the key from a backup or reissue"
    )]
    BadKey {
        /// Key file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A PEM file holds no usable certificate / CRL, or is malformed.
    #[error("{path}: {reason}")]
    BadPem {
        /// File that failed.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// index.json cannot be parsed or is inconsistent.
    #[error("{path} is corrupt ({reason}); restore it from a backup")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// Identity check failed (bad site id, missing SAN, ...).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rcgen refused to build a certificate or CRL.
    #[error("certificate generation failed: {0}")]
    Rcgen(rcgen::Error),
    /// The requested validity period is unusable.
    #[error("invalid validity period: {0}")]
    Validity(String),
    /// The certificate was not issued by this CA (bad signature or unknown serial).
    #[error("certificate {serial} was not issued by this CA ({reason})")]
    NotIssuedHere {
        /// Serial of the offending certificate.
        serial: String,
        /// Why it is not considered ours.
        reason: String,
    },
    /// The certificate is already revoked.
    #[error("certificate {serial} is already revoked ({when}); issue a new certificate instead")]
    AlreadyRevoked {
        /// Serial.
        serial: String,
        /// Revocation time, RFC 3339.
        when: String,
    },
    /// No certificate matched the revocation selector.
    #[error("nothing to revoke: {0}")]
    NothingToRevoke(String),
    /// Another process is modifying the CA directory.
    #[error("the CA is busy: another certs command holds the lock {0}; retry when it has finished")]
    Locked(PathBuf),
    /// A kit folder already holds a certificate or key.
    #[error(
        "{0} already exists; renew it with `certs renew`, or move it away before issuing a new kit"
    )]
    KitExists(PathBuf),
    /// Bad user input that is not covered above (DNS name, URL, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Result alias for this crate.
pub type Result<T, E = CertsError> = std::result::Result<T, E>;

impl From<rcgen::Error> for CertsError {
    fn from(e: rcgen::Error) -> Self {
        CertsError::Rcgen(e)
    }
}
