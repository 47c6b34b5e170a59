//! Human-readable description of a certificate: identity, dates, and (given the CA) whether the CA
//! signed it and whether it is revoked.

use std::fmt;
use std::path::Path;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::ca::{Ca, fmt_time};
use crate::error::Result;
use crate::identity::{
    CertKind, fingerprint_sha256, kind_from_parsed, parse_der, serial_hex_from_bytes,
    site_id_from_parsed,
};
use crate::pemio::parse_certs_pem;

/// What [`inspect`] found out about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN, e.g. `CN=S01`.
    pub subject: String,
    /// Subject alternative names, rendered as `DNS:x`, `IP:x`, `URI:x`.
    pub sans: Vec<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, canonical hex.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// `now > not_after`.
    pub expired: bool,
    /// `now < not_before`.
    pub not_yet_valid: bool,
    /// fedrad role from the URI SAN, if any.
    pub kind: Option<CertKind>,
    /// True for a CA certificate (basicConstraints cA).
    pub is_ca: bool,
    /// Extended key usages (`clientAuth`, `serverAuth`, ...).
    pub extended_key_usages: Vec<String>,
    /// Site id for site certificates.
    pub site_id: Option<String>,
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// From the CA index: `Some(true)` revoked, `Some(false)` issued and not revoked, `None` if no
    /// CA was given or the serial is not in its index.
    pub revoked: Option<bool>,
    /// Revocation reason and time from the index, if revoked.
    pub revocation: Option<String>,
    /// `Some(signature verifies with the CA key)`, `None` if no CA was given.
    pub signed_by_ca: Option<bool>,
}

/// Describes the first certificate in `cert_pem`. With `ca`, also checks the signature and looks
/// the serial up in the CA's index (as loaded when the `Ca` was opened).
pub fn inspect(cert_pem: &str, ca: Option<&Ca>) -> Result<CertInfo> {
    inspect_from(
        cert_pem,
        Path::new("<certificate>"),
        ca,
        OffsetDateTime::now_utc(),
    )
}

/// Like [`inspect`], naming `origin` in errors and evaluating expiry at `now`.
pub fn inspect_from(
    cert_pem: &str,
    origin: &Path,
    ca: Option<&Ca>,
    now: OffsetDateTime,
) -> Result<CertInfo> {
    let der = parse_certs_pem(cert_pem, origin)?.remove(0);
    let x = parse_der(&der)?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for g in &san.value.general_names {
            sans.push(match g {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).expect("len 4"))
                    ),
                    16 => format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).expect("len 16"))
                    ),
                    _ => format!("IP:{}", hex::encode(b)),
                },
                other => format!("{other}"),
            });
        }
    }
    let mut ekus = Vec::new();
    if let Ok(Some(eku)) = x.extended_key_usage() {
        let e = &eku.value;
        for (on, name) in [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.any, "any"),
        ] {
            if on {
                ekus.push(name.to_string());
            }
        }
    }
    let kind = kind_from_parsed(&x);
    let site_id = match kind {
        Some(CertKind::Site) => Some(site_id_from_parsed(&x)?),
        _ => None,
    };
    let serial_hex = serial_hex_from_bytes(x.raw_serial());
    let not_before = x.validity().not_before.to_datetime();
    let not_after = x.validity().not_after.to_datetime();
    let (revoked, revocation, signed_by_ca) = match ca {
        None => (None, None, None),
        Some(ca) => {
            let signed = ca.signed_this(&der);
            let entry = ca.index().find(&serial_hex).filter(|_| signed);
            let revocation = entry.filter(|e| e.revoked).map(|e| {
                format!(
                    "{} at {}",
                    e.revocation_reason.unwrap_or_default(),
                    e.revoked_at.map(fmt_time).unwrap_or_else(|| "?".into())
                )
            });
            (entry.map(|e| e.revoked), revocation, Some(signed))
        }
    };
    Ok(CertInfo {
        subject: x.subject().to_string(),
        sans,
        issuer: x.issuer().to_string(),
        serial_hex,
        not_before,
        not_after,
        expired: now > not_after,
        not_yet_valid: now < not_before,
        kind,
        is_ca: x.is_ca(),
        extended_key_usages: ekus,
        site_id,
        fingerprint: fingerprint_sha256(&der),
        revoked,
        revocation,
        signed_by_ca,
    })
}

impl CertInfo {
    /// One-word status: revoked / expired / not yet valid / valid.
    pub fn status(&self) -> &'static str {
        if self.revoked == Some(true) {
            "REVOKED"
        } else if self.expired {
            "EXPIRED"
        } else if self.not_yet_valid {
            "NOT YET VALID"
        } else {
            "valid"
        }
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match (self.kind, self.is_ca) {
            (Some(CertKind::Site), _) => format!("site {}", self.site_id.as_deref().unwrap_or("?")),
            (Some(CertKind::Aggregator), _) => "aggregator".to_string(),
            (None, true) => "certificate authority".to_string(),
            (None, false) => "not a fedrad certificate".to_string(),
        };
        writeln!(f, "role:         {role}")?;
        writeln!(f, "status:       {}", self.status())?;
        writeln!(f, "subject:      {}", self.subject)?;
        if !self.sans.is_empty() {
            writeln!(f, "alt names:    {}", self.sans.join(", "))?;
        }
        if !self.extended_key_usages.is_empty() {
            writeln!(f, "key usage:    {}", self.extended_key_usages.join(", "))?;
        }
        writeln!(f, "issuer:       {}", self.issuer)?;
        writeln!(f, "serial:       {}", self.serial_hex)?;
        writeln!(f, "not before:   {}", fmt_time(self.not_before))?;
        writeln!(f, "not after:    {}", fmt_time(self.not_after))?;
        writeln!(f, "sha256:       {}", self.fingerprint)?;
        if let Some(signed) = self.signed_by_ca {
            writeln!(
                f,
                "signed by CA: {}",
                if signed {
                    "yes"
                } else {
                    "NO (not issued by this CA)"
                }
            )?;
        }
        match (self.revoked, &self.revocation) {
            (Some(true), Some(how)) => writeln!(f, "revoked:      yes ({how})")?,
            (Some(true), None) => writeln!(f, "revoked:      yes")?,
            (Some(false), _) => writeln!(f, "revoked:      no")?,
            (None, _) if self.signed_by_ca == Some(true) && !self.is_ca => {
                writeln!(f, "revoked:      unknown (serial not in the CA index)")?
            }
            (None, _) => {}
        }
        Ok(())
    }
}
