//! rustls building blocks for fedrad's mutual TLS: certificate verifiers that enforce the CRL, and
//! ready-made server (aggregator) and client (site) configurations.
//!
//! All of them use the ring crypto provider explicitly, so they work whether or not a process-wide
//! default provider was installed. ALPN is set to `h2` because fedrad speaks gRPC over HTTP/2.
//! Revocation convention: with CRLs given, a certificate whose revocation status cannot be
//! determined (no CRL from its issuer) is rejected; CRL `nextUpdate` is not enforced, so an old
//! CRL keeps working (refresh it with `certs crl`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::error::{CertsError, Result};
use crate::pemio::{load_certs_pem, load_crls, load_key_pem};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding the given CA certificates.
pub fn root_store(ca_certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| CertsError::Tls(format!("unusable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Verifier for site (client) certificates: chain to `ca_certs`, EKU clientAuth, not revoked by
/// any of `crls`. Client authentication is mandatory.
pub fn client_verifier(
    ca_certs: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    WebPkiClientVerifier::builder_with_provider(root_store(ca_certs)?, provider())
        .with_crls(crls)
        .build()
        .map_err(|e| CertsError::Tls(format!("client verifier: {e}")))
}

/// Verifier for the aggregator (server) certificate: chain to `ca_certs`, EKU serverAuth, name
/// match (checked by rustls per connection), not revoked by any of `crls`.
pub fn server_verifier(
    ca_certs: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(root_store(ca_certs)?, provider())
        .with_crls(crls)
        .build()
        .map_err(|e| CertsError::Tls(format!("server verifier: {e}")))
}

/// The site's check of the aggregator's certificate: everything webpki checks (chain to the
/// consortium CA, validity dates, EKU serverAuth, the dialled name, the CRL if given), then
/// [`crate::identity::require_aggregator`]: the certificate must carry the
/// `urn:fedrad:aggregator` URI SAN and no site identity. The EKU split already keeps a normal
/// site certificate (clientAuth only, no DNS name) out; the URI check also refuses any other
/// certificate the CA might have issued with serverAuth and a matching name.
#[derive(Debug)]
pub struct AggregatorVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl AggregatorVerifier {
    /// Wraps a webpki server verifier (see [`server_verifier`]).
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self { inner }
    }
}

impl ServerCertVerifier for AggregatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        crate::identity::require_aggregator(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server config for the aggregator from in-memory material.
pub fn server_config(
    ca_certs: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertsError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier(ca_certs, crls)?)
        .with_single_cert(cert_chain, key)
        .map_err(|e| CertsError::Tls(format!("aggregator certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Client config for a site from in-memory material. `crls` may be empty (then the aggregator
/// certificate's revocation is not checked). The aggregator's certificate is checked by
/// [`AggregatorVerifier`].
pub fn client_config(
    ca_certs: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertsError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AggregatorVerifier::new(server_verifier(
            ca_certs, crls,
        )?)))
        .with_client_auth_cert(cert_chain, key)
        .map_err(|e| CertsError::Tls(format!("site certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// [`server_config`] from files (`ca.pem`, `crl.pem`, `aggregator.pem`, `aggregator.key`).
/// Refuses a key file readable by group or others.
pub fn server_config_from_files(
    ca: &Path,
    crl: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ServerConfig> {
    let k = load_key_pem(key)?;
    if let Some(w) = k.permissions.warning(key) {
        return Err(CertsError::Tls(w));
    }
    server_config(
        &load_certs_pem(ca)?,
        load_crls(crl)?,
        load_certs_pem(cert)?,
        k.key,
    )
}

/// [`client_config`] from files (`ca.pem`, `site.pem`, `site.key`, optional `crl.pem`).
/// Refuses a key file readable by group or others.
pub fn client_config_from_files(
    ca: &Path,
    crl: Option<&Path>,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig> {
    let k = load_key_pem(key)?;
    if let Some(w) = k.permissions.warning(key) {
        return Err(CertsError::Tls(w));
    }
    let crls = match crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    client_config(&load_certs_pem(ca)?, crls, load_certs_pem(cert)?, k.key)
}
