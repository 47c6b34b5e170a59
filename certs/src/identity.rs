//! The fedrad identity scheme: how a site or the aggregator is named inside an X.509 certificate.
//!
//! Conventions (other crates rely on these exactly):
//! - **Site certificate**: subject CN = the site id, one URI SAN `urn:fedrad:site:<ID>`, extended key
//!   usage ClientAuth only. The URI SAN is authoritative; the CN must agree with it.
//! - **Aggregator certificate**: subject CN = `fedrad aggregator`, SANs = the DNS names and IP
//!   addresses clients dial plus the URI `urn:fedrad:aggregator`, extended key usage ServerAuth only.
//!   Because the EKUs are disjoint, a site certificate cannot serve as the aggregator and the
//!   aggregator's certificate cannot log in as a site.
//! - **Site id**: 1..=64 characters from `[A-Za-z0-9_-]`. Case is preserved and significant. The
//!   charset keeps ids safe as file names, URI segments and TOML keys (no `/`, `.`, spaces).
//! - **Serial hex**: the certificate serial number as lowercase hex of its big-endian magnitude,
//!   without separators or leading zero bytes (DER adds a `00` byte to keep positive numbers
//!   positive; it is stripped here so the same serial always prints the same way).
//! - **Fingerprint**: SHA-256 of the whole DER certificate, lowercase hex, no separators.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Prefix of the URI SAN that names a site: `urn:fedrad:site:<ID>`.
pub const SITE_URI_PREFIX: &str = "urn:fedrad:site:";
/// URI SAN carried by the aggregator's certificate.
pub const AGGREGATOR_URI: &str = "urn:fedrad:aggregator";
/// Subject common name of the aggregator's certificate.
pub const AGGREGATOR_CN: &str = "fedrad aggregator";
/// Longest allowed site id.
pub const MAX_SITE_ID_LEN: usize = 64;

/// What went wrong while reading or checking an identity.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The site id is empty.
    #[error("site id is empty; use 1 to 64 characters from A-Z a-z 0-9 _ -")]
    EmptySiteId,
    /// The site id is longer than [`MAX_SITE_ID_LEN`].
    #[error("site id is {0} characters long; the limit is 64")]
    SiteIdTooLong(usize),
    /// The site id holds a character outside `[A-Za-z0-9_-]`.
    #[error("site id {id:?} contains {ch:?}; only A-Z a-z 0-9 _ - are allowed")]
    SiteIdBadChar {
        /// The offending id.
        id: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// The bytes are not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// The certificate has no `urn:fedrad:site:` URI SAN.
    #[error("certificate has no site identity (no {SITE_URI_PREFIX}<ID> URI SAN){hint}")]
    NoSiteIdentity {
        /// Extra hint, e.g. that the certificate is the aggregator's.
        hint: String,
    },
    /// The certificate names more than one site.
    #[error("certificate names more than one site ({0}); refusing an ambiguous identity")]
    MultipleSiteIdentities(String),
    /// The CN disagrees with the site URI SAN.
    #[error("certificate CN {cn:?} does not match its site URI SAN id {id:?}")]
    CnMismatch {
        /// Subject common name.
        cn: String,
        /// Id from the URI SAN.
        id: String,
    },
    /// A server presented a certificate that is not the aggregator's (a site certificate, or
    /// one without any fedrad identity), so a site must not talk to it.
    #[error(
        "the server's certificate is not the aggregator's: it has no {AGGREGATOR_URI} URI SAN{hint}; check aggregator_url in site.toml (someone else may be answering at that address)"
    )]
    NotAggregator {
        /// What the certificate is instead, e.g. that it names a site.
        hint: String,
    },
    /// A serial number given as text is not hex.
    #[error("serial {0:?} is not a hex number (expected e.g. 3f0a9c... , colons allowed)")]
    BadSerialHex(String),
}

/// Which role a certificate issued by the consortium CA plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// A hospital site agent (TLS client).
    Site,
    /// The central aggregator (TLS server).
    Aggregator,
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertKind::Site => "site",
            CertKind::Aggregator => "aggregator",
        })
    }
}

/// Checks that `id` is a valid site id (1..=64 chars of `[A-Za-z0-9_-]`).
pub fn validate_site_id(id: &str) -> Result<(), IdentityError> {
    if id.is_empty() {
        return Err(IdentityError::EmptySiteId);
    }
    let n = id.chars().count();
    if n > MAX_SITE_ID_LEN {
        return Err(IdentityError::SiteIdTooLong(n));
    }
    if let Some(ch) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdentityError::SiteIdBadChar {
            id: id.to_string(),
            ch,
        });
    }
    Ok(())
}

/// The URI SAN for a site: `urn:fedrad:site:<ID>`.
pub fn site_uri(site_id: &str) -> String {
    format!("{SITE_URI_PREFIX}{site_id}")
}

/// Parses a DER certificate with x509-parser, mapping errors to [`IdentityError`].
pub(crate) fn parse_der(cert_der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::BadCertificate(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// All URI SANs of a parsed certificate.
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// First subject common name, if any.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// Reads the site id from a DER certificate's `urn:fedrad:site:<ID>` URI SAN.
///
/// Fails if the certificate has no site SAN (for example it is the aggregator's), names several
/// sites, carries an invalid id, or has a CN that disagrees with the SAN. This does **not** check
/// the signature, validity period or revocation: call it on a certificate the TLS layer has
/// already verified (e.g. the peer certificate of an mTLS connection).
pub fn site_id_from_der(cert_der: &[u8]) -> Result<String, IdentityError> {
    let cert = parse_der(cert_der)?;
    site_id_from_parsed(&cert)
}

pub(crate) fn site_id_from_parsed(cert: &X509Certificate<'_>) -> Result<String, IdentityError> {
    let uris = uri_sans(cert);
    let ids: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(SITE_URI_PREFIX))
        .collect();
    match ids.as_slice() {
        [] => {
            let hint = if uris.contains(&AGGREGATOR_URI) {
                "; this is the aggregator's certificate".to_string()
            } else {
                String::new()
            };
            Err(IdentityError::NoSiteIdentity { hint })
        }
        [id] => {
            validate_site_id(id)?;
            if let Some(cn) = common_name(cert)
                && cn != *id
            {
                return Err(IdentityError::CnMismatch {
                    cn,
                    id: id.to_string(),
                });
            }
            Ok(id.to_string())
        }
        many => Err(IdentityError::MultipleSiteIdentities(many.join(", "))),
    }
}

/// Which fedrad role the certificate claims, from its URI SANs; `None` for other certificates
/// (e.g. the CA certificate). Like [`site_id_from_der`], this does not verify anything.
pub fn cert_kind_from_der(cert_der: &[u8]) -> Result<Option<CertKind>, IdentityError> {
    let cert = parse_der(cert_der)?;
    Ok(kind_from_parsed(&cert))
}

pub(crate) fn kind_from_parsed(cert: &X509Certificate<'_>) -> Option<CertKind> {
    let uris = uri_sans(cert);
    if uris.iter().any(|u| u.starts_with(SITE_URI_PREFIX)) {
        Some(CertKind::Site)
    } else if uris.contains(&AGGREGATOR_URI) {
        Some(CertKind::Aggregator)
    } else {
        None
    }
}

/// Checks that a DER certificate is the aggregator's: it carries the `urn:fedrad:aggregator` URI
/// SAN and no site URI SAN. Sites call this (through [`crate::tls::AggregatorVerifier`]) after
/// the usual chain, EKU and name checks, so a certificate the CA issued for anything else cannot
/// stand in for the aggregator even if it also had a serverAuth EKU and a matching DNS name.
/// Like [`site_id_from_der`], this does not verify signatures or dates.
pub fn require_aggregator(cert_der: &[u8]) -> Result<(), IdentityError> {
    let cert = parse_der(cert_der)?;
    let uris = uri_sans(&cert);
    let sites: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(SITE_URI_PREFIX))
        .collect();
    if !sites.is_empty() {
        return Err(IdentityError::NotAggregator {
            hint: format!("; it is the certificate of site {}", sites.join(", ")),
        });
    }
    if !uris.contains(&AGGREGATOR_URI) {
        return Err(IdentityError::NotAggregator {
            hint: "; it carries no fedrad identity at all".into(),
        });
    }
    Ok(())
}

/// The certificate serial number as canonical lowercase hex (see the module doc).
pub fn serial_hex_from_der(cert_der: &[u8]) -> Result<String, IdentityError> {
    let cert = parse_der(cert_der)?;
    Ok(serial_hex_from_bytes(cert.raw_serial()))
}

/// Canonical hex of big-endian serial bytes: leading zero bytes dropped, at least one byte kept.
pub(crate) fn serial_hex_from_bytes(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first.min(bytes.len())..])
}

/// Normalises a user-typed serial (`3F:0A:9C`, `0x3f0a9c`, `3f0a9c`) to canonical hex.
pub fn normalize_serial_hex(text: &str) -> Result<String, IdentityError> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let mut digits: String = body.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(IdentityError::BadSerialHex(text.to_string()));
    }
    if digits.len() % 2 == 1 {
        digits.insert(0, '0');
    }
    let bytes = hex::decode(digits.to_ascii_lowercase())
        .map_err(|_| IdentityError::BadSerialHex(text.to_string()))?;
    Ok(serial_hex_from_bytes(&bytes))
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex without separators.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_id_rules() {
        assert!(validate_site_id("S01").is_ok());
        assert!(validate_site_id("hosp_A-2").is_ok());
        assert!(validate_site_id(&"a".repeat(64)).is_ok());
        assert_eq!(validate_site_id(""), Err(IdentityError::EmptySiteId));
        assert_eq!(
            validate_site_id(&"a".repeat(65)),
            Err(IdentityError::SiteIdTooLong(65))
        );
        for bad in ["../x", "a b", "a.b", "é", "a/b", "a:b"] {
            let err = validate_site_id(bad).unwrap_err();
            assert!(matches!(err, IdentityError::SiteIdBadChar { .. }), "{bad}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn serial_normalisation() {
        assert_eq!(serial_hex_from_bytes(&[0, 0x80, 1]), "8001");
        assert_eq!(serial_hex_from_bytes(&[0]), "00");
        assert_eq!(normalize_serial_hex("0A:FF").unwrap(), "0aff");
        assert_eq!(normalize_serial_hex("0x00abc").unwrap(), "0abc");
        assert_eq!(normalize_serial_hex("7f").unwrap(), "7f");
        assert!(normalize_serial_hex("xyz").is_err());
        assert!(normalize_serial_hex("").is_err());
    }

    #[test]
    fn fingerprint_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            fingerprint_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
