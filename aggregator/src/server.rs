//! Runs the aggregator: the mTLS gRPC endpoint plus the housekeeping loop (round deadlines, the
//! study inbox, `status.json` and result files in the state directory).

use crate::config::AggregatorConfig;
use crate::coordinator::Coordinator;
use crate::results;
use crate::service::FederationService;
use crate::store::SledStore;
use anyhow::Context;
use federation::study::StudySpec;
use protocol::pb::federation_server::FederationServer;
use protocol::tls::{RefusalLog, ReloadingServerTls, tls_incoming};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running aggregator.
pub struct Server {
    pub addr: SocketAddr,
    pub coordinator: Arc<Coordinator>,
    pub refusals: RefusalLog,
    pub state_dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where `aggregator submit` drops study files for a running server to pick up.
pub fn inbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inbox")
}

/// Where the server writes `status.json`.
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

impl Server {
    /// Loads TLS, opens the state store, binds, and starts serving.
    pub async fn start(cfg: &AggregatorConfig) -> anyhow::Result<Server> {
        protocol::tls::install_crypto_provider();
        // Everything that can fail on bad input is checked before the state directory is touched.
        let tls = Arc::new(ReloadingServerTls::new(cfg.tls.clone())?);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        std::fs::create_dir_all(inbox_dir(&cfg.state_dir)).with_context(|| {
            format!("cannot create state directory {}", cfg.state_dir.display())
        })?;
        let store = SledStore::open(&cfg.state_dir)?;
        let coordinator = Arc::new(Coordinator::new(
            Box::new(store),
            cfg.enrolled_sites.clone(),
            cfg.round_deadline_ms,
            cfg.snapshot_interval_ms,
        )?);
        let refusals = RefusalLog::default();
        let (stop, stop_rx) = watch::channel(false);
        let service = FederationService {
            coordinator: coordinator.clone(),
            tls: tls.clone(),
            refusals: refusals.clone(),
        };
        let incoming = tls_incoming(listener, tls, refusals.clone());
        let mut grpc_stop = stop_rx.clone();
        let grpc = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(
                    FederationServer::new(service)
                        .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(protocol::MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("gRPC server stopped: {e}");
            }
        });
        let house = tokio::spawn(housekeeping(
            coordinator.clone(),
            cfg.state_dir.clone(),
            stop_rx,
        ));
        tracing::info!(
            "aggregator listening on {addr} (state in {})",
            cfg.state_dir.display()
        );
        Ok(Server {
            addr,
            coordinator,
            refusals,
            state_dir: cfg.state_dir.clone(),
            stop,
            tasks: vec![grpc, house],
        })
    }

    /// Stops serving and waits for the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn housekeeping(
    coordinator: Arc<Coordinator>,
    state_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_status = String::new();
    let mut last_write = std::time::Instant::now();
    loop {
        if let Err(e) = coordinator.tick() {
            tracing::error!("deadline check failed: {e}");
        }
        process_inbox(&coordinator, &state_dir);
        // Finished studies: results folder written and synced, then the study retired from
        // memory (see `Coordinator::retire`).
        for id in coordinator.finished_studies() {
            let dir = results::results_dir(&state_dir, &id);
            let written = if dir.join("study.json").exists() {
                Ok(())
            } else {
                coordinator
                    .study(&id)
                    .ok_or_else(|| anyhow::anyhow!("study {id} vanished"))
                    .and_then(|study| {
                        let rounds = coordinator.rounds(&id)?;
                        results::write_if_new(&state_dir, &study, &rounds)
                    })
            };
            let retired = written
                .and_then(|()| Ok(results::make_durable(&dir)?))
                .and_then(|()| Ok(coordinator.retire(&id)?));
            if let Err(e) = retired {
                tracing::error!("cannot write results of {id}: {e:#}");
            }
        }
        let report = coordinator.status();
        // Rewrite when something changed, and every 2 s anyway so readers can see liveness.
        let body = serde_json::to_string(&(&report.sites, &report.studies)).unwrap_or_default();
        if body != last_status || last_write.elapsed() >= Duration::from_secs(2) {
            let mut json = serde_json::to_string_pretty(&report).unwrap_or_default();
            json.push('\n');
            match crate::results::write_atomic(&status_path(&state_dir), json.as_bytes()) {
                Ok(()) => {
                    last_status = body;
                    last_write = std::time::Instant::now();
                }
                Err(e) => tracing::error!("cannot write status.json: {e}"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn process_inbox(coordinator: &Coordinator, state_dir: &Path) {
    let inbox = inbox_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&inbox) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let outcome = std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|text| Ok(StudySpec::from_toml(&text)?))
            .and_then(|spec| {
                // The same file seen again after a crash between registering the study and
                // filing this note: it is registered, so it is accepted (not "already exists").
                let hash = spec.hash();
                if coordinator.study_hash(spec.id.as_str()).as_ref() == Some(&hash) {
                    return Ok(hash);
                }
                Ok(coordinator.submit(spec)?)
            });
        let (dir, note) = match outcome {
            Ok(hash) => ("accepted", format!("accepted, study hash {hash}\n")),
            Err(e) => {
                tracing::error!("rejected study file {}: {e:#}", path.display());
                ("rejected", format!("{e:#}\n"))
            }
        };
        let target = inbox.join(dir);
        let _ = std::fs::create_dir_all(&target);
        let _ = std::fs::write(target.join(&name).with_extension("result"), note);
        let _ = std::fs::rename(&path, target.join(&name));
    }
}
