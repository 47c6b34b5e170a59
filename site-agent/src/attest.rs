//! Signed key announcements for secure aggregation: the site's [`federation::secure::KeyAttestor`]
//! made of its certificate, its private key and the consortium CA (`certs::attest`). The agent
//! hands one to its study memory at every connection (after a certificate renewal, the renewed
//! pair signs), so the site signs the X25519 key it announces in a key round and refuses a
//! masked round whose relayed keys are not signed by the sites they are relayed for.

use certs::attest::{SiteSigner, SiteVerifier};
use federation::secure::{KeyAttestation, KeyAttestor};

use crate::config::SiteConfig;

/// The site's signing certificate and the consortium CA.
#[derive(Debug)]
pub struct CertAttestor {
    signer: SiteSigner,
    verifier: SiteVerifier,
}

impl CertAttestor {
    /// From the site kit's `site.pem`, `site.key` and `ca.pem`. The CA check has no CRL (sites
    /// are not handed one): a revoked site is kept out by the aggregator's handshake instead.
    pub fn from_config(config: &SiteConfig) -> Result<Self, certs::CertsError> {
        certs::ensure_ring_provider();
        Ok(Self {
            signer: SiteSigner::from_files(&config.cert, &config.key)?,
            verifier: SiteVerifier::from_ca_file(&config.ca_cert)?,
        })
    }

    /// From parts already loaded (tests, simulations).
    pub fn new(signer: SiteSigner, verifier: SiteVerifier) -> Self {
        Self { signer, verifier }
    }
}

impl KeyAttestor for CertAttestor {
    fn site_id(&self) -> &str {
        self.signer.site_id()
    }

    fn attest(&self, message: &[u8]) -> Result<KeyAttestation, String> {
        let (scheme, signature) = self.signer.sign(message).map_err(|e| e.to_string())?;
        Ok(KeyAttestation {
            site_id: self.signer.site_id().to_string(),
            certificate: self.signer.certificate_der().to_vec(),
            scheme,
            signature,
        })
    }

    fn check(&self, attestation: &KeyAttestation, message: &[u8]) -> Result<(), String> {
        self.verifier
            .verify(
                &attestation.site_id,
                &attestation.certificate,
                message,
                attestation.scheme,
                &attestation.signature,
            )
            .map_err(|e| e.to_string())
    }
}
