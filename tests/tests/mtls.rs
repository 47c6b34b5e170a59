//! Who may talk to the aggregator: a valid enrolled site joins; a foreign CA, no client
//! certificate, an expired, not-yet-valid or revoked certificate, a non-enrolled site and an
//! agent speaking an older or newer protocol version are each refused, with a reason in the
//! aggregator's log (or, for version skew, a message naming both versions). A certificate that
//! expires while its connection is open is refused on the next request. Wrong identities and
//! exposed keys: `pki_attacks.rs`; renewal: `renewal.rs`.

use aggregator::Server;
use certs::{Ca, RevocationReason, Selector, Validity};
use fedrad_tests::{ClientCert, Consortium, client, handshake, refused_with};
use std::time::Duration;
use time::OffsetDateTime;

#[tokio::test]
async fn valid_site_joins_and_bad_clients_are_refused() {
    let mut c = Consortium::new(&["S01", "S03", "S04"]);
    let good = c.kit("S01", Validity::days(30));
    let now = OffsetDateTime::now_utc();
    let expired = c.kit(
        "S03",
        Validity::between(
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        ),
    );
    let not_enrolled = c.kit("S02", Validity::days(30));
    let server = Server::start(&c.config).await.unwrap();
    let ca = c.config.tls.ca_cert.clone();

    // A valid, enrolled site joins and the aggregator reads its id from the certificate.
    let mut ok = client(server.addr, &ca, ClientCert::Kit(&good)).await;
    let hs = ok.handshake(handshake()).await.unwrap().into_inner();
    assert_eq!(hs.site_id, "S01");

    // Under TLS 1.3 a rejected client learns it on the first RPC, not at connect.
    let mut none = client(server.addr, &ca, ClientCert::None).await;
    assert!(none.handshake(handshake()).await.is_err());
    refused_with(&server, "no certificate").await;

    let mut exp = client(server.addr, &ca, ClientCert::Kit(&expired)).await;
    assert!(exp.handshake(handshake()).await.is_err());
    refused_with(&server, "expired").await;

    // A certificate from another CA.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Ca::init(&other_dir.path().join("ca"), "rogue CA", 30).unwrap();
    let rogue = other
        .write_site_kit(
            "S01",
            other_dir.path(),
            "https://localhost:1",
            Validity::days(30),
        )
        .unwrap();
    let mut bad = client(server.addr, &ca, ClientCert::Kit(&rogue)).await;
    assert!(bad.handshake(handshake()).await.is_err());
    refused_with(&server, "not signed by the consortium CA").await;

    // A genuine certificate for a site the aggregator has not enrolled.
    let mut ne = client(server.addr, &ca, ClientCert::Kit(&not_enrolled)).await;
    let e = ne.handshake(handshake()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("S02 is not enrolled"),
        "{}",
        e.message()
    );

    // Version skew names both versions.
    let mut skew = handshake();
    skew.protocol_version = 99;
    let e = ok.handshake(skew).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("v99")
            && e.message()
                .contains(&format!("v{}", protocol::PROTOCOL_VERSION)),
        "{}",
        e.message()
    );

    server.shutdown().await;
}

#[tokio::test]
async fn revocation_takes_effect_without_restart() {
    let mut c = Consortium::new(&["S01"]);
    let kit = c.kit("S01", Validity::days(30));
    let server = Server::start(&c.config).await.unwrap();
    let ca = c.config.tls.ca_cert.clone();
    let mut open = client(server.addr, &ca, ClientCert::Kit(&kit)).await;
    open.handshake(handshake()).await.unwrap();

    // The CRL's mtime is how the server notices; make sure it visibly changes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked =
        c.ca.revoke(
            &Selector::SiteId("S01".into()),
            RevocationReason::KeyCompromise,
        )
        .unwrap();
    assert_eq!(revoked.len(), 1);

    // The already-open connection is refused on its next call...
    let e = open
        .heartbeat(protocol::pb::HeartbeatRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("revoked"), "{}", e.message());
    // ...and a new connection fails the TLS handshake.
    let mut fresh = client(server.addr, &ca, ClientCert::Kit(&kit)).await;
    assert!(fresh.handshake(handshake()).await.is_err());
    refused_with(&server, "revoked").await;
    server.shutdown().await;
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let mut c = Consortium::new(&["S01"]);
    let now = OffsetDateTime::now_utc();
    let future = c.kit(
        "S01",
        Validity::between(
            now + time::Duration::days(1),
            now + time::Duration::days(10),
        ),
    );
    let server = Server::start(&c.config).await.unwrap();
    let mut cl = client(server.addr, &c.config.tls.ca_cert, ClientCert::Kit(&future)).await;
    assert!(cl.handshake(handshake()).await.is_err());
    refused_with(&server, "not valid yet (check the clocks)").await;
    server.shutdown().await;
}

#[tokio::test]
async fn older_and_newer_protocol_versions_are_refused_naming_both() {
    let mut c = Consortium::new(&["S01"]);
    let kit = c.kit("S01", Validity::days(3));
    let server = Server::start(&c.config).await.unwrap();
    let mut cl = client(server.addr, &c.config.tls.ca_cert, ClientCert::Kit(&kit)).await;
    let ours = protocol::PROTOCOL_VERSION;
    for theirs in [ours - 1, ours + 1] {
        let mut hs = handshake();
        hs.protocol_version = theirs;
        let e = cl.handshake(hs).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains(&format!(
                "the agent speaks v{theirs}, this aggregator speaks v{ours}"
            )),
            "{}",
            e.message()
        );
    }
    // The same connection with the matching version is accepted: the refusal was the version.
    assert_eq!(
        cl.handshake(handshake())
            .await
            .unwrap()
            .into_inner()
            .site_id,
        "S01"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_expiring_on_an_open_connection_is_refused_on_the_next_request() {
    let mut c = Consortium::new(&["S01"]);
    // Whole-second validity: valid now, expired 3 s from now.
    let now = OffsetDateTime::now_utc();
    let short = c.kit(
        "S01",
        Validity::between(
            now - time::Duration::minutes(1),
            now + time::Duration::seconds(3),
        ),
    );
    let server = Server::start(&c.config).await.unwrap();
    let mut cl = client(server.addr, &c.config.tls.ca_cert, ClientCert::Kit(&short)).await;
    cl.handshake(handshake()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let e = cl
        .heartbeat(protocol::pb::HeartbeatRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("outside its validity period") && e.message().contains("certs renew"),
        "{}",
        e.message()
    );
    refused_with(&server, "outside its validity period").await;
    server.shutdown().await;
}

/// A message above tonic's 4 MiB default crosses the link both ways (a batch of 10 repeats
/// sends ≈ 7.5 MB LASSO tasks): the aggregator decodes an 8 MB push and answers about its
/// content (no such study), not about its size. Above `MAX_MESSAGE_BYTES` it is refused
/// unprocessed.
#[tokio::test]
async fn messages_above_four_mebibytes_cross_the_link() {
    use protocol::pb;
    let mut c = Consortium::new(&["S01"]);
    let kit = c.kit("S01", Validity::days(3));
    let server = Server::start(&c.config).await.unwrap();
    let mut cl = client(server.addr, &c.config.tls.ca_cert, ClientCert::Kit(&kit)).await;
    cl.handshake(handshake()).await.unwrap();
    let push = |len: usize| pb::PushResultRequest {
        result: Some(pb::TaskResult {
            study_id: "no-such-study".into(),
            round: 1,
            body: Some(pb::task_result::Body::Failure(pb::SiteFailure {
                message: "x".repeat(len),
            })),
        }),
    };
    let e = cl.push_result(push(8 << 20)).await.unwrap_err();
    assert!(
        !e.message().contains("too large") && e.message().contains("no-such-study"),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    let e = cl
        .push_result(push(protocol::MAX_MESSAGE_BYTES + 1))
        .await
        .unwrap_err();
    // Refused before it is processed (the sender's encoder stops it; the study is not named).
    assert!(!e.message().contains("no-such-study"), "{e:?}");
    server.shutdown().await;
}
