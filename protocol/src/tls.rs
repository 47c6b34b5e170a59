//! Mutual TLS for both sides: the aggregator's accept loop (client certificates required; CRL,
//! certificate and key reloaded without restart when their files change; every refusal logged
//! with its reason) and the agent's client channel (which accepts only a certificate carrying the
//! aggregator's identity, see [`certs::tls::AggregatorVerifier`]).
//!
//! Private keys readable by group or others are refused on both sides ([`check_key_permissions`]):
//! the message says `chmod 600 <path>`.
//!
//! Renewal convention (what `certs renew` does): write the new key first, then the new
//! certificate. The server reloads when any of CA/certificate/key/CRL changes and keeps the old
//! configuration while the pair is inconsistent; the agent watches its certificate file
//! ([`FileStamp`]) and reconnects with the renewed pair.

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
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
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
    #[error(
        "private key {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}` and start again"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
}

/// Refuses a private key file that group or others may read or write (any of the `0o077` bits):
/// whoever can read the key can act as this site or as the aggregator. No-op off Unix.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyExposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
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

/// Reads a private key; refuses a file readable by group or others ([`check_key_permissions`]).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_permissions(path)?;
    let bytes = read(path)?;
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

/// What identifies one version of a file on disk: modification time, size and (on Unix) inode.
/// The inode makes an atomic replace (write a temp file, rename it over) visible even when it
/// lands within the file system's timestamp granularity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(Option<(SystemTime, u64, u64)>);

impl FileStamp {
    /// The current stamp of `path` (`None` inside if it cannot be read).
    pub fn of(path: &Path) -> Self {
        FileStamp(std::fs::metadata(path).ok().map(|m| {
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), ino)
        }))
    }

    /// Whether `path` has changed since this stamp was taken.
    pub fn changed(&self, path: &Path) -> bool {
        *self != FileStamp::of(path)
    }
}

struct Loaded {
    /// Stamps of the CA, certificate, key and CRL files this configuration was built from.
    stamps: Vec<FileStamp>,
    acceptor: TlsAcceptor,
    revoked: Arc<BTreeSet<Vec<u8>>>,
    /// Serial (raw big-endian bytes) of the certificate the server presents.
    serial: Vec<u8>,
}

/// Server TLS configuration that picks up a new CRL, a renewed certificate or a new key without a
/// restart (checked on every accepted connection and every request).
pub struct ReloadingServerTls {
    files: ServerTlsFiles,
    loaded: Mutex<Loaded>,
}

fn stamps(files: &ServerTlsFiles) -> Vec<FileStamp> {
    let mut paths = vec![&files.ca_cert, &files.cert, &files.key];
    paths.extend(files.crl.as_ref());
    paths.into_iter().map(|p| FileStamp::of(p)).collect()
}

fn build(files: &ServerTlsFiles) -> Result<Loaded, TlsError> {
    install_crypto_provider();
    let stamps = stamps(files);
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
    let chain = load_certs(&files.cert)?;
    let serial = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, c)| c.raw_serial().to_vec())
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            problem: format!("not a valid X.509 certificate ({e})"),
        })?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, load_key(&files.key)?)
        .map_err(|e| {
            TlsError::Config(format!(
                "server certificate {} with key {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        stamps,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        revoked: Arc::new(revoked),
        serial,
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

    /// Reloads if the CA, certificate, key or CRL file changed. A broken or inconsistent new set
    /// (a half-written CRL, a new key whose certificate is not there yet) keeps the old
    /// configuration (logged): the server must not fall over while an admin replaces files. The
    /// next change is tried again.
    fn refresh(&self) {
        let now = stamps(&self.files);
        let mut l = self.loaded.lock().expect("tls lock");
        if now != l.stamps {
            match build(&self.files) {
                Ok(new) => {
                    tracing::info!(
                        "TLS files changed; reloaded (certificate serial {}, {} revoked)",
                        hex_serial(&new.serial),
                        new.revoked.len()
                    );
                    *l = new;
                }
                Err(e) => {
                    tracing::error!(
                        "TLS files changed but cannot be loaded, keeping the previous configuration: {e}"
                    );
                    l.stamps = now;
                }
            }
        }
    }

    /// Serial (raw big-endian bytes) of the certificate new connections are served, after
    /// picking up any change on disk.
    pub fn current_serial(&self) -> Vec<u8> {
        self.refresh();
        self.loaded.lock().expect("tls lock").serial.clone()
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

fn hex_serial(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "client certificate is not for TLS clients (no clientAuth extended key usage: the aggregator's own certificate?)".into()
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
            // As on the agent's side: without it, Nagle's algorithm holds a small reply back
            // until the previous segment is acknowledged (up to the peer's delayed-ACK timer,
            // ~40 ms on Linux), once per round trip.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY for {peer}: {e}");
            }
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

/// Opens a mutual-TLS channel to the aggregator. The aggregator's certificate must chain to the
/// consortium CA, carry serverAuth and `server_name`, and name the aggregator
/// (`urn:fedrad:aggregator`, see [`certs::tls::AggregatorVerifier`]): a site certificate cannot
/// pose as the aggregator. The key file must not be readable by others ([`load_key`]).
///
/// Note: under TLS 1.3 a server that rejects our certificate only says so on the first RPC, so
/// callers must treat the first call's error as a possible refusal.
pub async fn connect(url: &str, files: &ClientTlsFiles) -> Result<Channel, TlsError> {
    install_crypto_provider();
    let config = certs::tls::client_config(
        &load_certs(&files.ca_cert)?,
        Vec::new(),
        load_certs(&files.cert)?,
        load_key(&files.key)?,
    )
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let bad_url = |why: String| TlsError::Connect {
        url: url.into(),
        message: format!("not a valid URL: {why}"),
    };
    let uri: Uri = url.parse().map_err(|e| bad_url(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad_url("use https://host:port".into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad_url("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name =
        rustls::pki_types::ServerName::try_from(files.server_name.clone()).map_err(|e| {
            TlsError::Config(format!(
                "aggregator_name {:?} is not a DNS name or IP address ({e})",
                files.server_name
            ))
        })?;
    // tonic only wraps `https` URIs in its own TLS; the connector below does our TLS, so the
    // endpoint itself is given as plain `http` with the same authority.
    let endpoint = Endpoint::from_shared(format!(
        "http://{}",
        uri.authority().map_or("", |a| a.as_str())
    ))
    .map_err(|e| bad_url(e.to_string()))?
    .connect_timeout(Duration::from_secs(5))
    .tcp_keepalive(Some(Duration::from_secs(30)));
    let connector = AggregatorConnector {
        tls: TlsConnector::from(Arc::new(config)),
        host,
        port,
        server_name,
    };
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TlsError::Connect {
            url: url.into(),
            message: error_chain(&e),
        })
}

/// Dials the aggregator over TCP and completes the mutual-TLS handshake with the site's config.
#[derive(Clone)]
struct AggregatorConnector {
    tls: TlsConnector,
    host: String,
    port: u16,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl tonic::codegen::Service<Uri> for AggregatorConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect((this.host.as_str(), this.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Joins an error's source chain into one line (tonic's top-level messages are terse).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = readable(e);
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = readable(c);
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// One error's message, with rustls' debug-formatted custom certificate errors (our
/// [`certs::tls::AggregatorVerifier`] refusal) replaced by their own message.
fn readable(e: &(dyn std::error::Error + 'static)) -> String {
    let inner = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
    });
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            format!("invalid peer certificate: {}", o.0)
        }
        _ => e.to_string(),
    }
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
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| tonic::Status::permission_denied(format!("client certificate: {e}")))?;
    // The handshake checked the dates, but a connection can outlive its certificate: check on
    // every request, as for revocation.
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(tonic::Status::permission_denied(format!(
            "client certificate of site {site} is outside its validity period ({} to {}); renew it with `certs renew`",
            validity.not_before, validity.not_after
        )));
    }
    Ok((site, cert.raw_serial().to_vec()))
}
