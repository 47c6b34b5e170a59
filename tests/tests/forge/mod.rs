//! Certificates the `certs` tool refuses to issue (wrong SANs, wrong EKUs), signed with a real
//! consortium CA key, for tests that show the verifiers — not just the issuing tool — refuse them.
//! Also a rogue TLS server that presents any certificate, to play a fake aggregator.

#![allow(dead_code)]

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to put into a forged leaf.
pub struct Forge<'a> {
    pub cn: &'a str,
    pub uris: &'a [&'a str],
    pub dns: &'a [&'a str],
    pub ekus: &'a [ExtendedKeyUsagePurpose],
}

/// Signs a leaf with the CA in `ca_dir` (its `ca.pem` / `ca.key`) and writes it as a kit folder
/// `out/` holding `site.pem`, `site.key` (mode 0600) and `ca.pem`. Returns `out`.
pub fn forge_kit(ca_dir: &Path, out: &Path, f: &Forge<'_>) -> PathBuf {
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, f.cn);
    p.distinguished_name = dn;
    let mut sans = Vec::new();
    for d in f.dns {
        sans.push(SanType::DnsName((*d).try_into().unwrap()));
    }
    for u in f.uris {
        sans.push(SanType::URI((*u).try_into().unwrap()));
    }
    p.subject_alt_names = sans;
    p.extended_key_usages = f.ekus.to_vec();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(2);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("site.pem"), cert.pem()).unwrap();
    write_key(&out.join("site.key"), &key.serialize_pem());
    std::fs::copy(ca_dir.join("ca.pem"), out.join("ca.pem")).unwrap();
    out.to_path_buf()
}

/// Writes a private key with mode 0600.
pub fn write_key(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A TLS server on loopback that presents `cert`/`key` (PEM files) to anyone, asks for no client
/// certificate and speaks nothing after the handshake: a fake aggregator. Returns its address.
pub async fn rogue_server(cert: &Path, key: &Path) -> SocketAddr {
    protocol::tls::install_crypto_provider();
    let chain = certs::load_certs_pem(cert).unwrap();
    let key = certs::load_key_pem(key).unwrap().key;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Hold the stream open briefly so the client sees the handshake outcome.
                if let Ok(s) = acceptor.accept(tcp).await {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    drop(s);
                }
            });
        }
    });
    addr
}

/// Client TLS files of a kit folder, dialling `localhost`.
pub fn tls_files(kit: &Path) -> protocol::tls::ClientTlsFiles {
    protocol::tls::ClientTlsFiles {
        ca_cert: kit.join("ca.pem"),
        cert: kit.join("site.pem"),
        key: kit.join("site.key"),
        server_name: "localhost".into(),
    }
}
