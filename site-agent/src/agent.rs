//! The agent's network loop: dial out to the aggregator over mutual TLS, pull tasks, answer them
//! through the policy gate, log, push; reconnect with backoff when the network drops.

use crate::audit::{AuditError, AuditLog};
use crate::config::SiteConfig;
use crate::data::{DataError, load_table};
use federation::PROTOCOL_VERSION;
use federation::site as answer;
use federation::table::SiteTable;
use federation::task::Task;
use prost::Message;
use protocol::pb;
use protocol::pb::federation_client::FederationClient;
use protocol::tls::error_chain;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Timing knobs. Defaults suit a real deployment; tests shorten them.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// How long one `PullWork` may wait at the aggregator for a task.
    pub poll_wait: Duration,
    pub heartbeat: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Artificial delay before answering each task (simulates a slow site in tests and demos).
    pub task_delay: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            poll_wait: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            task_delay: Duration::ZERO,
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("the aggregator refused this site: {0}")]
    Refused(String),
    #[error("{0}")]
    Setup(String),
}

enum SessionError {
    /// Retrying cannot help (version skew, not enrolled, revoked or rejected certificate).
    Fatal(String),
    /// This site's own files are wrong (unreadable key or certificate): fix them and restart.
    Setup(String),
    /// The network or the aggregator went away; retry with backoff.
    Transient(String),
}

/// TLS alerts a rejected client receives; under TLS 1.3 they surface on the first RPC.
const FATAL_ALERTS: [(&str, &str); 5] = [
    (
        "CertificateRevoked",
        "this site's certificate is revoked; ask the consortium for a new kit",
    ),
    (
        "CertificateExpired",
        "this site's certificate has expired; renew it with `certs renew`",
    ),
    (
        "UnknownCA",
        "this site's certificate is not from the consortium CA the aggregator trusts",
    ),
    (
        "CertificateRequired",
        "the aggregator requires a client certificate; check cert/key in site.toml",
    ),
    (
        "BadCertificate",
        "the aggregator rejected this site's certificate",
    ),
];

fn classify(status: &tonic::Status) -> SessionError {
    use tonic::Code;
    let chain = error_chain(status);
    for (alert, meaning) in FATAL_ALERTS {
        if chain.contains(alert) {
            return SessionError::Fatal(format!("{meaning} ({chain})"));
        }
    }
    match status.code() {
        Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated => {
            SessionError::Fatal(status.message().to_string())
        }
        _ => SessionError::Transient(chain),
    }
}

/// A running site agent.
pub struct Agent {
    config: SiteConfig,
    /// Shared with the blocking task that answers (read-only).
    table: std::sync::Arc<SiteTable>,
    audit: std::sync::Arc<std::sync::Mutex<AuditLog>>,
    options: AgentOptions,
    /// Per-study state of multi-stage studies, persisted in `state_dir` after every answer
    /// that changes it, so an agent restart loses no stage.
    memory: answer::SiteMemory,
}

/// Where the agent keeps its study memory (`federation::site::SiteMemory` as JSON): the site's
/// own state of multi-stage studies, never sent. Public so that `aggregator simulate study`,
/// where the statistician holds every simulated site's data anyway, can read the per-patient
/// probabilities the simulated sites kept.
pub fn memory_path(config: &SiteConfig) -> std::path::PathBuf {
    config.state_dir.join("study-memory.json")
}

/// Where the agent journals the kept LASSO standardisations, which the memory file leaves out
/// (see [`crate::journal`]).
pub fn journal_path(config: &SiteConfig) -> std::path::PathBuf {
    config.state_dir.join("study-memory.std.log")
}

fn load_memory(config: &SiteConfig) -> Result<answer::SiteMemory, AgentError> {
    let path = memory_path(config);
    let mut memory: answer::SiteMemory = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            AgentError::Setup(format!(
                "the study memory {} is unreadable ({e}); move it away to start the running studies' local state afresh",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => answer::SiteMemory::default(),
        Err(e) => return Err(AgentError::Setup(format!("reading {}: {e}", path.display()))),
    };
    memory.apply_kept_std(crate::journal::read(&journal_path(config)).map_err(AgentError::Setup)?);
    Ok(memory)
}

/// Journals the kept standardisations that changed with the last answer (emptying the journal
/// once nothing is kept).
fn save_kept_std(config: &SiteConfig, memory: &mut answer::SiteMemory) -> Result<(), String> {
    let changes = memory.take_kept_std();
    if changes.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("creating {}: {e}", config.state_dir.display()))?;
    let path = journal_path(config);
    if memory.kept_std_is_empty() {
        crate::journal::truncate(&path)
    } else {
        crate::journal::append(&path, &changes)
    }
}

/// Writes the memory atomically (temp file + rename): a crash leaves the old or the new file.
fn save_memory(config: &SiteConfig, memory: &answer::SiteMemory) -> Result<(), String> {
    let path = memory_path(config);
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("creating {}: {e}", config.state_dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(memory).map_err(|e| e.to_string())?;
    // Owner-only: the memory holds the studies' secure-aggregation secrets (X25519 keys,
    // federation::secure). Set on open and again for a temp file left by an earlier crash.
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        #[cfg(unix)]
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(&bytes)
    };
    write().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

impl Agent {
    /// Loads the data table and opens the audit log; nothing is sent yet.
    pub fn new(config: SiteConfig, options: AgentOptions) -> Result<Self, AgentError> {
        let table = load_table(&config.data_table, &config.id_column)?;
        let audit = AuditLog::open(&config.audit_log)?;
        let memory = load_memory(&config)?;
        Ok(Self {
            config,
            table: std::sync::Arc::new(table),
            audit: std::sync::Arc::new(std::sync::Mutex::new(audit)),
            options,
            memory,
        })
    }

    /// Runs until `shutdown` resolves (Ok) or the aggregator refuses this site (Err).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut backoff = self.options.backoff_initial;
        loop {
            let outcome = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.session(&mut backoff) => r,
            };
            match outcome {
                Ok(never) => match never {},
                Err(SessionError::Fatal(m)) => return Err(AgentError::Refused(m)),
                Err(SessionError::Setup(m)) => return Err(AgentError::Setup(m)),
                Err(SessionError::Transient(m)) => {
                    tracing::warn!(
                        "lost the aggregator at {} ({m}); retrying in {:?}",
                        self.config.aggregator_url,
                        backoff
                    );
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    /// One connection's life. The certificate file is watched: when it is replaced (a
    /// `certs renew`), the session ends and the next one connects with the renewed pair, so a
    /// running study goes on; a refusal that arrives after the replacement (the old certificate
    /// was revoked as superseded) is retried with the new certificate instead of stopping.
    async fn session(
        &mut self,
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, SessionError> {
        let cert = self.config.cert.clone();
        let stamp = protocol::tls::FileStamp::of(&cert);
        match self.session_with(backoff, &stamp).await {
            Err(SessionError::Fatal(m)) if stamp.changed(&cert) => {
                Err(SessionError::Transient(format!(
                    "{m}; the certificate {} was replaced since, reconnecting with it",
                    cert.display()
                )))
            }
            other => other,
        }
    }

    async fn session_with(
        &mut self,
        backoff: &mut Duration,
        cert_stamp: &protocol::tls::FileStamp,
    ) -> Result<std::convert::Infallible, SessionError> {
        let channel: Channel =
            protocol::tls::connect(&self.config.aggregator_url, &self.config.tls_files())
                .await
                .map_err(|e| match e {
                    protocol::tls::TlsError::Connect { .. } => {
                        SessionError::Transient(e.to_string())
                    }
                    other => SessionError::Fatal(other.to_string()),
                })?;
        let mut client = FederationClient::new(channel)
            .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(protocol::MAX_MESSAGE_BYTES);
        let hs = client
            .handshake(pb::HandshakeRequest {
                protocol_version: PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await
            .map_err(|s| classify(&s))?
            .into_inner();
        if hs.protocol_version != PROTOCOL_VERSION {
            return Err(SessionError::Fatal(format!(
                "protocol version mismatch: this agent speaks v{PROTOCOL_VERSION}, the aggregator speaks v{}; install matching releases",
                hs.protocol_version
            )));
        }
        tracing::info!(
            "connected to the aggregator (v{}) as site {}",
            hs.aggregator_version,
            hs.site_id
        );
        *backoff = self.options.backoff_initial;
        // Signs this site's secure-aggregation key announcements and checks its peers' (loaded
        // per connection, so a renewed certificate signs after the reconnect).
        let attestor = crate::attest::CertAttestor::from_config(&self.config).map_err(|e| {
            SessionError::Setup(format!(
                "cannot load the site certificate and key for signing key announcements: {e}"
            ))
        })?;
        self.memory
            .secure
            .set_attestor(std::sync::Arc::new(attestor));
        let mut last_beat = Instant::now() - self.options.heartbeat;
        loop {
            // Checked only here, between tasks, so no pulled task is left unanswered.
            if cert_stamp.changed(&self.config.cert) {
                return Err(SessionError::Transient(format!(
                    "certificate {} was renewed; reconnecting with it",
                    self.config.cert.display()
                )));
            }
            if last_beat.elapsed() >= self.options.heartbeat {
                client
                    .heartbeat(pb::HeartbeatRequest {})
                    .await
                    .map_err(|s| classify(&s))?;
                last_beat = Instant::now();
            }
            let pulled = client
                .pull_work(pb::PullWorkRequest {
                    wait_ms: self.options.poll_wait.as_millis() as u32,
                })
                .await
                .map_err(|s| classify(&s))?
                .into_inner();
            let Some(task) = pulled.task else { continue };
            let (study_id, round) = (task.study_id.clone(), task.round);
            let task = match Task::try_from(task) {
                Ok(t) => t,
                Err(e) => {
                    // Answer with a failure instead of ignoring it: the aggregator would hand
                    // out the same task again and again, and the study would wait forever.
                    // Typically the agent and the aggregator are different releases.
                    let message = format!(
                        "site agent {} cannot read this task ({e}); install the same fedrad release as the aggregator",
                        env!("CARGO_PKG_VERSION")
                    );
                    tracing::error!("study {study_id} round {round}: {message}");
                    // Built by the site's gate like every other answer (federation::site).
                    let failure = match answer::unreadable_task(&study_id, round, message) {
                        Ok(r) => pb::TaskResult::from(&r),
                        Err(e) => {
                            tracing::error!("study {study_id:?}: nothing to answer ({e})");
                            continue;
                        }
                    };
                    client
                        .push_result(pb::PushResultRequest {
                            result: Some(failure),
                        })
                        .await
                        .map_err(|s| classify(&s))?;
                    continue;
                }
            };
            // From here until the push this agent holds the task (fault tests kill it here).
            tracing::debug!(
                "study {} round {}: task received",
                task.study_id,
                task.round
            );
            if !self.options.task_delay.is_zero() {
                tokio::time::sleep(self.options.task_delay).await;
            }
            // Answering, saving the study memory and the audit append (fsync) run on the
            // blocking pool: on the async workers they would stall this process's other work
            // (in a simulation, the aggregator and every other agent) for the whole computation.
            let work = AnswerWork {
                task,
                table: self.table.clone(),
                policy: self.config.policy.clone(),
                memory: std::mem::take(&mut self.memory),
                audit: self.audit.clone(),
                config: self.config.clone(),
            };
            let done = tokio::task::spawn_blocking(move || work.run())
                .await
                .map_err(|e| SessionError::Setup(format!("answering the task panicked: {e}")))?;
            self.memory = done.memory;
            let (task, msg) = (done.task, done.msg);
            let entry = done.entry.map_err(SessionError::Setup)?;
            tracing::info!(
                "study {} round {}: sent {} ({} bytes, audit #{})",
                task.study_id,
                task.round,
                done.kind,
                entry.bytes,
                entry.seq
            );
            client
                .push_result(pb::PushResultRequest { result: Some(msg) })
                .await
                .map_err(|s| classify(&s))?;
        }
    }
}

/// One task's local work, moved to the blocking pool and back (the agent's memory and audit log
/// travel with it so the async side never shares them).
struct AnswerWork {
    task: Task,
    table: std::sync::Arc<SiteTable>,
    policy: federation::policy::SitePolicy,
    memory: answer::SiteMemory,
    audit: std::sync::Arc<std::sync::Mutex<AuditLog>>,
    config: SiteConfig,
}

struct AnswerDone {
    task: Task,
    kind: &'static str,
    msg: pb::TaskResult,
    entry: Result<crate::audit::AuditEntry, String>,
    memory: answer::SiteMemory,
}

impl AnswerWork {
    fn run(mut self) -> AnswerDone {
        let answer::Answer { result, local_note } =
            answer::answer_with_memory(&self.task, &self.table, &self.policy, &mut self.memory);
        let saved = if self.memory.take_dirty() {
            save_memory(&self.config, &self.memory)
        } else {
            Ok(())
        }
        .and_then(|()| save_kept_std(&self.config, &mut self.memory));
        if let Some(note) = local_note {
            tracing::error!(
                "study {} round {}: cannot answer: {note}",
                self.task.study_id,
                self.task.round
            );
        }
        let msg = pb::TaskResult::from(&result);
        let entry = saved.and_then(|()| {
            let bytes = msg.encode_to_vec();
            self.audit
                .lock()
                .map_err(|_| "the audit log lock is poisoned".to_string())?
                .append(
                    self.task.study_id.as_str(),
                    self.task.round,
                    self.task.body.kind(),
                    result.body.kind(),
                    answer::describe(&result),
                    &bytes,
                )
                .map_err(|e| e.to_string())
        });
        AnswerDone {
            kind: result.body.kind(),
            task: self.task,
            msg,
            entry,
            memory: self.memory,
        }
    }
}
