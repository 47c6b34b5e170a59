//! Mutual TLS for both sides: the aggregator's accept loop (client certificates required, CRL
//! reloaded without restart, every refusal logged with its reason) and the agent's client channel.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use x509_parser::prelude::FromDer;

/// A TLS setup problem, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot reach the aggregator at {url}: {message}")]
    Connect { url: String, message: String },
}

/// Installs ring as the process-wide rustls provider (idempotent). Call once at startup.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("not a valid PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: "holds no certificate (expected a -----BEGIN CERTIFICATE----- block)".into(),
        });
    }
    Ok(certs)
}

/// Reads a private key; warns when the file is readable by group or others.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "private key {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            );
        }
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        problem: format!(
            "holds no valid PEM private key, expected a -----BEGIN PRIVATE KEY----- block ({e})"
        ),
    })
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("not a valid PEM CRL ({e})"),
        })
}

/// The aggregator's TLS files.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The consortium's revocation list (`certs revoke` writes it); reloaded when it changes.
    pub crl: Option<PathBuf>,
}

struct Loaded {
    crl_mtime: Option<SystemTime>,
    acceptor: TlsAcceptor,
    revoked: Arc<BTreeSet<Vec<u8>>>,
}

/// Server TLS configuration that picks up a new CRL without a restart.
pub struct ReloadingServerTls {
    files: ServerTlsFiles,
    loaded: Mutex<Loaded>,
}

fn crl_mtime(files: &ServerTlsFiles) -> Option<SystemTime> {
    files
        .crl
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

fn build(files: &ServerTlsFiles) -> Result<Loaded, TlsError> {
    install_crypto_provider();
    let mtime = crl_mtime(files);
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&files.ca_cert)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", files.ca_cert.display())))?;
    }
    let crls = match &files.crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    let mut revoked = BTreeSet::new();
    for crl in &crls {
        if let Ok((_, parsed)) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
        {
            for r in parsed.iter_revoked_certificates() {
                revoked.insert(r.raw_serial().to_vec());
            }
        }
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| {
            TlsError::Config(format!("server certificate {}: {e}", files.cert.display()))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        crl_mtime: mtime,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        revoked: Arc::new(revoked),
    })
}

impl ReloadingServerTls {
    pub fn new(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let loaded = build(&files)?;
        Ok(Self {
            files,
            loaded: Mutex::new(loaded),
        })
    }

    /// Reloads if the CRL file changed. A broken new CRL keeps the old configuration (logged):
    /// the server must not fall over because an admin saved a half-written file.
    fn refresh(&self) {
        let now = crl_mtime(&self.files);
        let mut l = self.loaded.lock().expect("tls lock");
        if now != l.crl_mtime {
            match build(&self.files) {
                Ok(new) => {
                    tracing::info!(
                        "revocation list changed; reloaded ({} revoked)",
                        new.revoked.len()
                    );
                    *l = new;
                }
                Err(e) => {
                    tracing::error!(
                        "revocation list changed but cannot be loaded, keeping the old one: {e}"
                    );
                    l.crl_mtime = now;
                }
            }
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.refresh();
        self.loaded.lock().expect("tls lock").acceptor.clone()
    }

    /// Whether a certificate serial (raw big-endian bytes) is on the current CRL; checked on every
    /// request so a revocation also ends already-open connections.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.refresh();
        self.loaded
            .lock()
            .expect("tls lock")
            .revoked
            .contains(serial)
    }
}

/// A refused connection, kept for `aggregator status` and tests.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub peer: SocketAddr,
    pub reason: String,
    pub at: SystemTime,
}

/// Shared log of refused connections.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog(Arc<Mutex<Vec<Refusal>>>);

impl RefusalLog {
    pub fn push(&self, peer: SocketAddr, reason: String) {
        tracing::warn!("refused connection from {peer}: {reason}");
        let mut v = self.0.lock().expect("refusal lock");
        v.push(Refusal {
            peer,
            reason,
            at: SystemTime::now(),
        });
        let len = v.len();
        if len > 1000 {
            v.drain(..len - 1000);
        }
    }
    pub fn all(&self) -> Vec<Refusal> {
        self.0.lock().expect("refusal lock").clone()
    }
}

/// Turns a rustls handshake error into the sentence an admin needs.
pub fn explain_handshake_error(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match inner {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Revoked => "client certificate is revoked (on the consortium CRL)".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate has expired; renew it with `certs renew`".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate is not valid yet (check the clocks)".into()
            }
            CertificateError::UnknownIssuer => {
                "client certificate is not signed by the consortium CA".into()
            }
            other => format!("client certificate rejected: {other:?}"),
        },
        Some(Error::NoCertificatesPresented) => {
            "client sent no certificate; mutual TLS is required (use the site kit's site.pem/site.key)".into()
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

/// Accepts TCP connections and completes the TLS handshake for each on its own task; yields the
/// established streams for `tonic::transport::Server::serve_with_incoming`. Refusals are logged.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadingServerTls>,
    refusals: RefusalLog,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = tls.acceptor();
            let conn_tx = tx.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = conn_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => refusals.push(peer, explain_handshake_error(&e)),
                    Err(_) => refusals.push(peer, "TLS handshake timed out".into()),
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The site agent's TLS files.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name on the aggregator's certificate (a DNS name or IP).
    pub server_name: String,
}

/// Opens a mutual-TLS channel to the aggregator. Note: under TLS 1.3 a server that rejects our
/// certificate only says so on the first RPC, so callers must treat the first call's error as a
/// possible refusal.
pub async fn connect(url: &str, files: &ClientTlsFiles) -> Result<Channel, TlsError> {
    install_crypto_provider();
    let ca = read(&files.ca_cert)?;
    load_certs(&files.ca_cert)?;
    let cert = read(&files.cert)?;
    load_certs(&files.cert)?;
    load_key(&files.key)?;
    let key = read(&files.key)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(files.server_name.clone());
    let endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| TlsError::Connect {
            url: url.into(),
            message: format!("not a valid URL: {e}"),
        })?
        .tls_config(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    endpoint.connect().await.map_err(|e| TlsError::Connect {
        url: url.into(),
        message: error_chain(&e),
    })
}

/// Joins an error's source chain into one line (tonic's top-level messages are terse).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The caller's site id and certificate serial, read only from its verified certificate.
pub fn peer_identity<T>(
    req: &tonic::Request<T>,
) -> Result<(federation::SiteId, Vec<u8>), tonic::Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate on this connection")
    })?;
    let der = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate on this connection")
    })?;
    let id = certs::identity::site_id_from_der(der.as_ref())
        .map_err(|e| tonic::Status::permission_denied(format!("client certificate: {e}")))?;
    let site = federation::SiteId::new(id)
        .map_err(|e| tonic::Status::permission_denied(format!("client certificate: {e}")))?;
    let serial = x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c.raw_serial().to_vec())
        .map_err(|e| tonic::Status::permission_denied(format!("client certificate: {e}")))?;
    Ok((site, serial))
}
