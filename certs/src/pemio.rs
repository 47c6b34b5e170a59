//! Loading PEM certificates, private keys and CRLs from files, with errors that name the file,
//! and a permission check on key files so callers can warn or refuse.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{CertsError, Result};
use crate::fsutil::read_text;

/// Unix permissions of a private key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPermissions {
    /// Permission bits (`mode & 0o777`); `None` on platforms without Unix modes.
    pub mode: Option<u32>,
}

impl KeyPermissions {
    /// True if group or others may read or write the key (any of the `0o077` bits is set).
    pub fn is_exposed(&self) -> bool {
        self.mode.is_some_and(|m| m & 0o077 != 0)
    }

    /// A one-line warning to show when [`Self::is_exposed`]; `None` if the mode is fine.
    pub fn warning(&self, path: &Path) -> Option<String> {
        if self.is_exposed() {
            Some(format!(
                "private key {} has mode {:o}, readable by other users; run `chmod 600 {}`",
                path.display(),
                self.mode.unwrap_or(0),
                path.display()
            ))
        } else {
            None
        }
    }
}

/// A private key read from disk, with the file's permissions.
#[derive(Debug)]
pub struct LoadedKey {
    /// The key (PKCS#8, SEC1 or PKCS#1 DER).
    pub key: PrivateKeyDer<'static>,
    /// The PEM text as read (rcgen's `KeyPair::from_pem` wants it).
    pub pem: String,
    /// Permissions of the key file.
    pub permissions: KeyPermissions,
}

/// Reads the permission bits of `path`.
pub fn key_permissions(path: &Path) -> Result<KeyPermissions> {
    let meta = std::fs::metadata(path).map_err(|err| CertsError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(KeyPermissions {
            mode: Some(meta.permissions().mode() & 0o777),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(KeyPermissions { mode: None })
    }
}

/// Parses all certificates in PEM text. `origin` names the source in errors.
pub fn parse_certs_pem(pem: &str, origin: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CertsError::BadPem {
            path: origin.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertsError::BadPem {
            path: origin.to_path_buf(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Loads every certificate from a PEM file (fails if there is none).
pub fn load_certs_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = read_text(path)?;
    parse_certs_pem(&text, path)
}

/// Parses one private key from PEM text.
pub fn parse_key_pem(pem: &str, origin: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertsError::BadKey {
        path: origin.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            other => format!("malformed PEM: {other}"),
        },
    })
}

/// Loads a private key from a PEM file and reports its permissions. This does not refuse an
/// exposed key: check [`KeyPermissions::is_exposed`] and warn or refuse as the caller sees fit.
pub fn load_key_pem(path: &Path) -> Result<LoadedKey> {
    let permissions = key_permissions(path)?;
    let pem = read_text(path)?;
    let key = parse_key_pem(&pem, path)?;
    Ok(LoadedKey {
        key,
        pem,
        permissions,
    })
}

/// Loads every CRL (`X509 CRL` PEM blocks) from a file. An existing file with no CRL block is an
/// error, since an aggregator that silently loads no CRL would accept revoked sites.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let text = read_text(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(text.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CertsError::BadPem {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if crls.is_empty() {
        return Err(CertsError::BadPem {
            path: path.to_path_buf(),
            reason: "no X509 CRL block found".into(),
        });
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl).map_err(|e| CertsError::BadPem {
            path: path.to_path_buf(),
            reason: format!("not a valid X.509 CRL: {e}"),
        })?;
    }
    Ok(crls)
}
