//! Statements signed by a site: the site signs a short message with its certificate's private
//! key, and anyone who holds the consortium CA checks the certificate (chain to the CA, valid
//! now, clientAuth, not on the given CRLs), the site id it names and the signature.
//!
//! Used for secure aggregation's key announcements (`federation::secure`): the aggregator relays
//! every site's X25519 public key, and with the announcement signed by the announcing site's
//! certificate key a relaying aggregator cannot substitute a key of its own without the peers
//! noticing.
//!
//! Conventions: the signature scheme is chosen from the key type (ECDSA P-256 with SHA-256 for
//! the certificates `certs` issues; P-384, Ed25519 and RSA-PSS keys work too) and travels as its
//! TLS `SignatureScheme` code point (RFC 8446 §4.2.3, e.g. `0x0403` = `ecdsa_secp256r1_sha256`),
//! with the signature in the same encoding TLS 1.3 uses (DER `ECDSA-Sig-Value` for ECDSA). All
//! cryptography is rustls' ring provider's.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::SigningKey;

use crate::identity::site_id_from_der;
use crate::{CertsError, Result};

/// Schemes a site may sign with, in order of preference (TLS 1.3 schemes only).
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// Why a signed statement was not accepted. Each message says what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The certificate does not verify against the consortium CA (foreign CA, expired, not yet
    /// valid, revoked, not a client certificate, malformed).
    #[error("its certificate is not a valid site certificate of this consortium: {0}")]
    Certificate(String),
    /// The certificate names no site, or another site than the one the statement is for.
    #[error("its certificate belongs to site {found:?}, not to {expected:?}")]
    WrongSite { expected: String, found: String },
    /// The signature does not verify with the certificate's key over the statement.
    #[error("the signature does not verify with the certificate's key ({0})")]
    Signature(String),
}

/// A site's signing half: its certificate and private key.
pub struct SiteSigner {
    site_id: String,
    cert: CertificateDer<'static>,
    key: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for SiteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteSigner")
            .field("site_id", &self.site_id)
            .finish_non_exhaustive()
    }
}

impl SiteSigner {
    /// A signer from the site's certificate (the first of `certs`, as in `site.pem`) and key.
    pub fn new(certs: &[CertificateDer<'static>], key: &PrivateKeyDer<'static>) -> Result<Self> {
        let cert = certs
            .first()
            .cloned()
            .ok_or_else(|| CertsError::Tls("no site certificate to sign with".into()))?;
        let site_id = site_id_from_der(&cert).map_err(|e| {
            CertsError::Tls(format!("the signing certificate is not a site's: {e}"))
        })?;
        let key = rustls::crypto::ring::sign::any_supported_type(key)
            .map_err(|e| CertsError::Tls(format!("the site key cannot sign: {e}")))?;
        if key.choose_scheme(SCHEMES).is_none() {
            return Err(CertsError::Tls(format!(
                "the site key ({:?}) supports none of the TLS 1.3 signature schemes",
                key.algorithm()
            )));
        }
        Ok(Self { site_id, cert, key })
    }

    /// A signer from the site kit's `site.pem` and `site.key`.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        let certs = crate::load_certs_pem(cert)?;
        let key = crate::load_key_pem(key)?;
        Self::new(&certs, &key.key)
    }

    /// The site id the certificate names.
    pub fn site_id(&self) -> &str {
        &self.site_id
    }

    /// The certificate (DER), sent with every signature so that a peer can check it.
    pub fn certificate_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// Signs `message`: returns the scheme's TLS code point and the signature.
    pub fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>)> {
        let signer = self
            .key
            .choose_scheme(SCHEMES)
            .ok_or_else(|| CertsError::Tls("the site key supports no usable scheme".into()))?;
        let scheme = u16::from(signer.scheme());
        let signature = signer
            .sign(message)
            .map_err(|e| CertsError::Tls(format!("signing failed: {e}")))?;
        Ok((scheme, signature))
    }
}

/// The checking half: the consortium CA (and optionally its CRLs).
pub struct SiteVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for SiteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteVerifier").finish_non_exhaustive()
    }
}

impl SiteVerifier {
    /// Accepts site certificates that chain to `ca_certs` and are on none of `crls`.
    pub fn new(
        ca_certs: &[CertificateDer<'static>],
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self> {
        Ok(Self {
            verifier: crate::tls::client_verifier(ca_certs, crls)?,
        })
    }

    /// From the kit's `ca.pem` (no CRL: sites are not handed one).
    pub fn from_ca_file(ca: &std::path::Path) -> Result<Self> {
        Self::new(&crate::load_certs_pem(ca)?, Vec::new())
    }

    /// Checks that `cert_der` is a site certificate of the consortium valid now, that it names
    /// `site_id`, and that its key signed `message` (`scheme`: TLS code point).
    pub fn verify(
        &self,
        site_id: &str,
        cert_der: &[u8],
        message: &[u8],
        scheme: u16,
        signature: &[u8],
    ) -> std::result::Result<(), AttestError> {
        let cert = CertificateDer::from(cert_der.to_vec());
        self.verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map_err(|e| AttestError::Certificate(e.to_string()))?;
        let found = site_id_from_der(&cert).map_err(|e| AttestError::Certificate(e.to_string()))?;
        if found != site_id {
            return Err(AttestError::WrongSite {
                expected: site_id.to_string(),
                found,
            });
        }
        verify_signature(&cert, message, scheme, signature)
    }
}

/// Verifies `signature` over `message` with the key of `cert` under TLS scheme `scheme`.
fn verify_signature(
    cert: &CertificateDer<'_>,
    message: &[u8],
    scheme: u16,
    signature: &[u8],
) -> std::result::Result<(), AttestError> {
    use x509_parser::prelude::FromDer;
    let scheme = SignatureScheme::from(scheme);
    if !SCHEMES.contains(&scheme) {
        return Err(AttestError::Signature(format!(
            "scheme {scheme:?} is not accepted"
        )));
    }
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| AttestError::Certificate(format!("unparsable certificate: {e}")))?;
    let public_key = &parsed.tbs_certificate.subject_pki.subject_public_key.data;
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .unwrap_or_default();
    // A scheme maps to one algorithm per key encoding; the one matching the certificate's key
    // type verifies, the others refuse the key.
    if candidates
        .iter()
        .any(|alg| alg.verify_signature(public_key, message, signature).is_ok())
    {
        Ok(())
    } else {
        Err(AttestError::Signature(format!("{scheme:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, Validity};

    #[test]
    fn a_site_signature_verifies_and_every_alteration_is_refused() {
        crate::ensure_ring_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut ca = Ca::init(&dir.path().join("ca"), "test CA", 30).unwrap();
        let s01 = ca
            .write_site_kit(
                "S01",
                &dir.path().join("kits"),
                "https://x:1",
                Validity::days(2),
            )
            .unwrap();
        let s02 = ca
            .write_site_kit(
                "S02",
                &dir.path().join("kits"),
                "https://x:1",
                Validity::days(2),
            )
            .unwrap();
        let signer = SiteSigner::from_files(&s01.join("site.pem"), &s01.join("site.key")).unwrap();
        assert_eq!(signer.site_id(), "S01");
        let verifier = SiteVerifier::from_ca_file(&s01.join("ca.pem")).unwrap();
        let (scheme, sig) = signer.sign(b"announce S01 key").unwrap();
        assert_eq!(scheme, 0x0403, "ecdsa_secp256r1_sha256");
        let cert = signer.certificate_der();
        verifier
            .verify("S01", cert, b"announce S01 key", scheme, &sig)
            .unwrap();

        // Another message, another site's name, a flipped signature bit.
        assert!(matches!(
            verifier.verify("S01", cert, b"announce S01 kez", scheme, &sig),
            Err(AttestError::Signature(_))
        ));
        assert_eq!(
            verifier.verify("S02", cert, b"announce S01 key", scheme, &sig),
            Err(AttestError::WrongSite {
                expected: "S02".into(),
                found: "S01".into()
            })
        );
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            verifier
                .verify("S01", cert, b"announce S01 key", scheme, &bad)
                .is_err()
        );
        // S02's certificate with S01's signature: S02's key did not sign it.
        let s02_cert = crate::load_certs_pem(&s02.join("site.pem")).unwrap();
        assert!(matches!(
            verifier.verify(
                "S02",
                s02_cert[0].as_ref(),
                b"announce S01 key",
                scheme,
                &sig
            ),
            Err(AttestError::Signature(_))
        ));

        // A certificate from another CA, with its own valid signature.
        let mut other = Ca::init(&dir.path().join("other"), "other CA", 30).unwrap();
        let forged = other
            .write_site_kit(
                "S01",
                &dir.path().join("forged"),
                "https://x:1",
                Validity::days(2),
            )
            .unwrap();
        let forger =
            SiteSigner::from_files(&forged.join("site.pem"), &forged.join("site.key")).unwrap();
        let (scheme, sig) = forger.sign(b"announce S01 key").unwrap();
        assert!(matches!(
            verifier.verify(
                "S01",
                forger.certificate_der(),
                b"announce S01 key",
                scheme,
                &sig
            ),
            Err(AttestError::Certificate(_))
        ));
    }
}
