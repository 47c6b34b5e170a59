//! Helpers for fedrad's end-to-end tests: a throwaway consortium on disk (CA, aggregator kit,
//! site kits) and raw gRPC clients with whatever certificate a test wants to present.

use aggregator::AggregatorConfig;
use certs::{Ca, Validity};
use federation::SiteId;
use protocol::pb::federation_client::FederationClient;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The cohort example every end-to-end test uses.
pub fn cohort_example() -> PathBuf {
    repo_root().join("../shared/examples/cohort_example.csv")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A CA, an aggregator kit and an aggregator config in a temporary directory.
pub struct Consortium {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub config: AggregatorConfig,
}

impl Consortium {
    /// A consortium whose aggregator enrols `enrolled`.
    pub fn new(enrolled: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = Ca::init(&dir.path().join("ca"), "test CA", 30).unwrap();
        let agg = dir.path().join("aggregator");
        ca.write_aggregator_kit(
            &agg,
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Validity::days(5),
        )
        .unwrap();
        let config = AggregatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: agg.join("state"),
            enrolled_sites: enrolled.iter().map(|s| SiteId::new(*s).unwrap()).collect(),
            round_deadline_ms: 60_000,
            snapshot_interval_ms: aggregator::coordinator::DEFAULT_SNAPSHOT_INTERVAL_MS,
            tls: protocol::tls::ServerTlsFiles {
                ca_cert: agg.join("ca.pem"),
                cert: agg.join("aggregator.pem"),
                key: agg.join("aggregator.key"),
                crl: Some(ca.crl_path()),
            },
        };
        Self { dir, ca, config }
    }

    /// Issues a site kit (cert, key, CA) and returns its folder.
    pub fn kit(&mut self, site: &str, validity: Validity) -> PathBuf {
        self.ca
            .write_site_kit(
                site,
                &self.dir.path().join("kits"),
                "https://localhost:1",
                validity,
            )
            .unwrap()
    }
}

/// How a raw test client presents itself.
pub enum ClientCert<'a> {
    /// The kit's `site.pem` / `site.key`.
    Kit(&'a Path),
    /// No client certificate at all.
    None,
}

/// A gRPC client to `addr` trusting `ca_pem`, presenting `cert`.
pub async fn client(
    addr: SocketAddr,
    ca_pem: &Path,
    cert: ClientCert<'_>,
) -> FederationClient<Channel> {
    protocol::tls::install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca_pem).unwrap()))
        .domain_name("localhost");
    if let ClientCert::Kit(kit) = cert {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(kit.join("site.pem")).unwrap(),
            std::fs::read(kit.join("site.key")).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    FederationClient::new(channel)
        .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(protocol::MAX_MESSAGE_BYTES)
}

/// A handshake with this build's protocol version.
pub fn handshake() -> protocol::pb::HandshakeRequest {
    protocol::pb::HandshakeRequest {
        protocol_version: federation::PROTOCOL_VERSION,
        agent_version: "test".into(),
    }
}

/// The Table 1 study the end-to-end tests run: `examples/table1-study.toml` (so the documented
/// example cannot rot), under the id `table1`.
pub fn table1_spec() -> federation::study::StudySpec {
    let text = std::fs::read_to_string(repo_root().join("examples/table1-study.toml")).unwrap();
    let mut spec = federation::study::StudySpec::from_toml(&text).unwrap();
    spec.id = federation::StudyId::new("table1").unwrap();
    spec
}

/// The pooled table's sites as in-memory site tables with one policy, for `run_local`.
pub fn local_sites(
    table: &aggregator::simulate::PooledTable,
    policy: &federation::policy::SitePolicy,
) -> std::collections::BTreeMap<
    SiteId,
    (federation::table::SiteTable, federation::policy::SitePolicy),
> {
    table
        .by_site
        .iter()
        .map(|(s, rows)| {
            let t = federation::table::SiteTable::new(table.header.clone(), rows.clone())
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s.clone(), (t, policy.clone()))
        })
        .collect()
}

/// Waits (up to 1 s) for the server's accept loop to log a refusal whose reason mentions
/// `needle`; panics with the whole refusal log otherwise.
pub async fn refused_with(server: &aggregator::Server, needle: &str) {
    for _ in 0..50 {
        if server
            .refusals
            .all()
            .iter()
            .any(|r| r.reason.contains(needle))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no refusal mentioning {needle:?}; log: {:?}",
        server
            .refusals
            .all()
            .iter()
            .map(|r| &r.reason)
            .collect::<Vec<_>>()
    );
}

/// The undisturbed result: `spec` over the pooled table's sites in process (no network, no
/// faults), every site with `min_count` and a policy allowing exactly this study. Fault tests
/// compare the federated run with it.
pub fn reference_state(
    table: &aggregator::simulate::PooledTable,
    spec: &federation::study::StudySpec,
    min_count: u64,
) -> federation::engine::StudyState {
    let policy = federation::policy::SitePolicy {
        min_count,
        allowed_studies: vec![spec.hash().0],
        ..federation::policy::SitePolicy::default()
    };
    let state = federation::local::run_local(spec.clone(), &local_sites(table, &policy), 10_000)
        .expect("the in-process reference runs");
    assert_eq!(
        state.status,
        federation::engine::StudyStatus::Completed,
        "reference: {}",
        state.status.describe()
    );
    state
}

/// No round lost or double-counted: every round from 1 to `last` is recorded exactly once, in
/// order, with exactly one result from each of the study's `sites` (the per-site byte counts
/// are always kept; the results themselves where the store has not pruned them).
pub fn assert_rounds_counted_once(
    rounds: &[federation::engine::RoundRecord],
    last: u32,
    sites: &[SiteId],
) {
    let numbers: Vec<u32> = rounds.iter().map(|r| r.round).collect();
    assert_eq!(numbers, (1..=last).collect::<Vec<_>>(), "recorded rounds");
    for r in rounds {
        assert!(
            r.bytes.keys().eq(sites.iter()),
            "round {}: results from {:?}, study sites {sites:?}",
            r.round,
            r.bytes.keys().collect::<Vec<_>>(),
        );
        assert!(r.results.is_empty() || r.results.keys().eq(sites.iter()));
    }
}
