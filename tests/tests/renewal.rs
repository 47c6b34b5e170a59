//! Certificate renewal without restarting a running study: mid-study, one site's certificate is
//! renewed with a new key (key written first, then the certificate, as `certs renew --new-key`
//! does) and the old certificate is revoked as superseded; the aggregator's certificate is
//! renewed with a new key as well. Nobody is restarted. The agent notices its new certificate
//! and reconnects with it, the aggregator serves its new certificate to new connections, and the
//! study completes with the same output as an undisturbed in-process run.

mod forge;

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use certs::{Ca, RevocationReason, Selector, Validity};
use federation::engine::StudyStatus;
use federation::local::run_local;
use federation::policy::SitePolicy;
use fedrad_tests::{cohort_example, local_sites, table1_spec};
use forge::write_key;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Serial (canonical hex) of the certificate the aggregator at `port` presents to a new
/// connection, read with a raw TLS handshake using the site kit `kit`.
async fn served_serial(port: u16, kit: &Path) -> String {
    let cfg = certs::tls::client_config(
        &certs::load_certs_pem(&kit.join("ca.pem")).unwrap(),
        Vec::new(),
        certs::load_certs_pem(&kit.join("site.pem")).unwrap(),
        certs::load_key_pem(&kit.join("site.key")).unwrap().key,
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    certs::serial_hex_from_der(&der).unwrap()
}

fn serial_of(pem_path: &Path) -> String {
    certs::serial_hex_from_der(&certs::load_certs_pem(pem_path).unwrap()[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_are_picked_up_without_restarting_the_study() {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let spec = table1_spec();
    let mut opts = SimOptions {
        min_count: 1,
        ..SimOptions::default()
    };
    // Slow enough that the renewals land mid-study.
    opts.agent.task_delay = Duration::from_millis(100);
    let sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    let coordinator = sim.server.coordinator.clone();
    coordinator.submit(spec.clone()).unwrap();
    for _ in 0..600 {
        if coordinator.study_status("table1").unwrap().1 >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = coordinator.study("table1").unwrap();
    assert!(
        !st.status.is_finished(),
        "the study finished before the renewal; slow it down"
    );

    let site = sim.sites[0].clone();
    let kit = sim.kit(&site);
    let agg = sim.dir.path().join("aggregator");
    let old_site_serial = serial_of(&kit.join("site.pem"));
    let old_agg_serial = serial_of(&agg.join("aggregator.pem"));
    assert_eq!(
        served_serial(sim.server.addr.port(), &kit).await,
        old_agg_serial
    );

    let mut ca = Ca::open(&sim.dir.path().join("ca")).unwrap();
    // The site: new key, then the certificate; then the old certificate is revoked, so only the
    // renewed one can get in from now on.
    let old_pem = std::fs::read_to_string(kit.join("site.pem")).unwrap();
    let renewed = ca.renew(&old_pem, Validity::days(2), true).unwrap();
    write_key(&kit.join("site.key"), renewed.key_pem.as_deref().unwrap());
    std::fs::write(kit.join("site.pem.tmp"), &renewed.cert_pem).unwrap();
    std::fs::rename(kit.join("site.pem.tmp"), kit.join("site.pem")).unwrap();
    ca.revoke(
        &Selector::Serial(old_site_serial.clone()),
        RevocationReason::Superseded,
    )
    .unwrap();

    // The aggregator: same procedure on its kit, without a restart.
    let old_agg_pem = std::fs::read_to_string(agg.join("aggregator.pem")).unwrap();
    let renewed_agg = ca.renew(&old_agg_pem, Validity::days(2), true).unwrap();
    write_key(
        &agg.join("aggregator.key"),
        renewed_agg.key_pem.as_deref().unwrap(),
    );
    std::fs::write(agg.join("aggregator.pem.tmp"), &renewed_agg.cert_pem).unwrap();
    std::fs::rename(agg.join("aggregator.pem.tmp"), agg.join("aggregator.pem")).unwrap();
    assert_ne!(renewed_agg.serial_hex, old_agg_serial);
    assert_eq!(
        served_serial(sim.server.addr.port(), &kit).await,
        renewed_agg.serial_hex,
        "new connections must get the renewed aggregator certificate"
    );

    let state = sim
        .wait_finished("table1", Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    // Still finishing mid-renewal would be no proof: the renewal happened at round >= 2 of a
    // study that was not finished, and the old site certificate is revoked, so every round
    // after it was answered over a connection made with the renewed certificate.
    assert_ne!(renewed.serial_hex, old_site_serial);
    sim.shutdown().await;

    let policy = SitePolicy {
        min_count: 1,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    };
    let reference = run_local(spec, &local_sites(&table, &policy), 100).unwrap();
    assert_eq!(state.output, reference.output);
}
