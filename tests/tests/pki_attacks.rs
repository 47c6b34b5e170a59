//! Certificates used where they do not belong, over real loopback TLS: a certificate whose site
//! SAN disagrees with its CN, that names two sites or no fedrad identity, the aggregator's own
//! certificate presented by a client, a site certificate (or any non-aggregator certificate)
//! presented by a server posing as the aggregator, an aggregator certificate from another CA or
//! expired, and private keys readable by other users. Each is refused with a reason.

mod forge;

use aggregator::Server;
use certs::{Ca, Validity};
use fedrad_tests::{ClientCert, Consortium, client, handshake, refused_with};
use forge::{Forge, forge_kit, rogue_server, tls_files, write_key};
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use time::OffsetDateTime;

#[tokio::test]
async fn certificates_with_a_wrong_or_missing_site_identity_are_refused() {
    let mut c = Consortium::new(&["S01", "S02"]);
    let server = Server::start(&c.config).await.unwrap();
    let ca_dir = c.ca.dir().to_path_buf();
    let ca_pem = c.config.tls.ca_cert.clone();
    let root = c.dir.path().join("forged");
    let cases: [(&str, Forge<'_>, &str); 4] = [
        (
            "cn-mismatch",
            Forge {
                cn: "S01",
                uris: &["urn:fedrad:site:S02"],
                dns: &[],
                ekus: &[ClientAuth],
            },
            "CN \"S01\" does not match its site URI SAN id \"S02\"",
        ),
        (
            "two-sites",
            Forge {
                cn: "S01",
                uris: &["urn:fedrad:site:S01", "urn:fedrad:site:S02"],
                dns: &[],
                ekus: &[ClientAuth],
            },
            "names more than one site (S01, S02)",
        ),
        (
            "no-fedrad-uri",
            Forge {
                cn: "S01",
                uris: &[],
                dns: &["s01.example.org"],
                ekus: &[ClientAuth],
            },
            "no site identity",
        ),
        (
            "bad-site-id",
            Forge {
                cn: "S 01",
                uris: &["urn:fedrad:site:S%2001"],
                dns: &[],
                ekus: &[ClientAuth],
            },
            "only A-Z a-z 0-9 _ - are allowed",
        ),
    ];
    for (name, f, needle) in cases {
        let kit = forge_kit(&ca_dir, &root.join(name), &f);
        let mut cl = client(server.addr, &ca_pem, ClientCert::Kit(&kit)).await;
        let e = cl.handshake(handshake()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}: {e:?}");
        assert!(e.message().contains(needle), "{name}: {}", e.message());
        refused_with(&server, needle).await;
    }

    // The genuine S02 kit still gets in: the refusals above are about the certificates.
    let s02 = c.kit("S02", Validity::days(3));
    let mut ok = client(server.addr, &ca_pem, ClientCert::Kit(&s02)).await;
    assert_eq!(
        ok.handshake(handshake())
            .await
            .unwrap()
            .into_inner()
            .site_id,
        "S02"
    );

    // A site-named certificate with only the serverAuth EKU is not a client certificate.
    let server_only = forge_kit(
        &ca_dir,
        &root.join("server-eku"),
        &Forge {
            cn: "S01",
            uris: &["urn:fedrad:site:S01"],
            dns: &[],
            ekus: &[ServerAuth],
        },
    );
    let mut cl = client(server.addr, &ca_pem, ClientCert::Kit(&server_only)).await;
    assert!(cl.handshake(handshake()).await.is_err());
    refused_with(&server, "no clientAuth extended key usage").await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_aggregator_certificate_cannot_log_in_as_a_site() {
    let c = Consortium::new(&["S01"]);
    let server = Server::start(&c.config).await.unwrap();
    // A "kit" made of the aggregator's own certificate and key.
    let kit = c.dir.path().join("agg-as-client");
    std::fs::create_dir_all(&kit).unwrap();
    std::fs::copy(&c.config.tls.cert, kit.join("site.pem")).unwrap();
    std::fs::copy(&c.config.tls.key, kit.join("site.key")).unwrap();
    let mut cl = client(server.addr, &c.config.tls.ca_cert, ClientCert::Kit(&kit)).await;
    assert!(cl.handshake(handshake()).await.is_err());
    refused_with(&server, "no clientAuth extended key usage").await;
    server.shutdown().await;
}

/// `protocol::tls::connect` (what the agent uses) against a server presenting `cert`/`key`;
/// returns the error text.
async fn agent_connect_error(site_kit: &Path, cert: &Path, key: &Path) -> String {
    let addr = rogue_server(cert, key).await;
    let url = format!("https://localhost:{}", addr.port());
    match protocol::tls::connect(&url, &tls_files(site_kit)).await {
        Ok(_) => panic!(
            "the agent accepted the server certificate {}",
            cert.display()
        ),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn only_the_aggregator_certificate_is_accepted_by_the_agent() {
    let mut c = Consortium::new(&["S01"]);
    let s01 = c.kit("S01", Validity::days(3));
    let s02 = c.kit("S02", Validity::days(3));
    let ca_dir = c.ca.dir().to_path_buf();
    let forged = c.dir.path().join("forged");

    // Positive control: the real aggregator is accepted.
    let server = Server::start(&c.config).await.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    protocol::tls::connect(&url, &tls_files(&s01))
        .await
        .expect("the genuine aggregator certificate must be accepted");
    server.shutdown().await;

    // Another site's genuine certificate (clientAuth only, no DNS name): refused by webpki.
    let e = agent_connect_error(&s01, &s02.join("site.pem"), &s02.join("site.key")).await;
    assert!(
        e.contains("invalid peer certificate") && e.contains("localhost:"),
        "{e}"
    );

    // A site certificate that also has serverAuth and the dialled name (mis-issued or forged
    // with the CA key): webpki alone would accept it; the aggregator-identity check refuses it.
    let rogue = forge_kit(
        &ca_dir,
        &forged.join("site-as-server"),
        &Forge {
            cn: "S02",
            uris: &["urn:fedrad:site:S02"],
            dns: &["localhost"],
            ekus: &[ServerAuth, ClientAuth],
        },
    );
    let e = agent_connect_error(&s01, &rogue.join("site.pem"), &rogue.join("site.key")).await;
    assert!(
        e.contains("not the aggregator's")
            && e.contains("urn:fedrad:aggregator")
            && e.contains("site S02"),
        "{e}"
    );

    // Any other serverAuth certificate for localhost without the aggregator URI.
    let plain = forge_kit(
        &ca_dir,
        &forged.join("plain-server"),
        &Forge {
            cn: "localhost",
            uris: &[],
            dns: &["localhost"],
            ekus: &[ServerAuth],
        },
    );
    let e = agent_connect_error(&s01, &plain.join("site.pem"), &plain.join("site.key")).await;
    assert!(
        e.contains("not the aggregator's") && e.contains("no fedrad identity"),
        "{e}"
    );

    // A proper aggregator certificate from another CA: unknown issuer.
    let other = tempfile::tempdir().unwrap();
    let mut rogue_ca = Ca::init(&other.path().join("ca"), "rogue CA", 30).unwrap();
    let rogue_agg = rogue_ca
        .write_aggregator_kit(
            &other.path().join("agg"),
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Validity::days(3),
        )
        .unwrap();
    let e = agent_connect_error(
        &s01,
        &rogue_agg.join("aggregator.pem"),
        &rogue_agg.join("aggregator.key"),
    )
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // The consortium's aggregator certificate, but expired.
    let now = OffsetDateTime::now_utc();
    let old =
        c.ca.issue_aggregator(
            &["localhost".into()],
            &[],
            Validity::between(
                now - time::Duration::days(10),
                now - time::Duration::days(1),
            ),
        )
        .unwrap();
    let dir = c.dir.path().join("expired-agg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agg.pem"), &old.cert_pem).unwrap();
    write_key(&dir.join("agg.key"), &old.key_pem);
    let e = agent_connect_error(&s01, &dir.join("agg.pem"), &dir.join("agg.key")).await;
    assert!(e.contains("certificate expired"), "{e}");
}

#[cfg(unix)]
#[tokio::test]
async fn private_keys_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let mut c = Consortium::new(&["S01"]);
    let kit = c.kit("S01", Validity::days(3));
    std::fs::write(kit.join("data.csv"), "patient_id,response\nP1,1\n").unwrap();
    std::fs::write(
        kit.join("site.toml"),
        "aggregator_url = \"https://localhost:1\"\nca_cert = \"ca.pem\"\ncert = \"site.pem\"\nkey = \"site.key\"\npolicy = \"policy.toml\"\ndata_table = \"data.csv\"\n",
    )
    .unwrap();
    let key = kit.join("site.key");

    // The kit as issued (0600) loads.
    site_agent::SiteConfig::load(&kit.join("site.toml")).unwrap();

    // Group- or world-readable: the site agent refuses to start, and says how to fix it.
    for mode in [0o640, 0o604, 0o660] {
        chmod(&key, mode);
        let e = site_agent::SiteConfig::load(&kit.join("site.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("mode {mode:o}"))
                && e.contains(&format!("run `chmod 600 {}`", key.display())),
            "{e}"
        );
        // The TLS layer refuses it too, in case a caller skips the config loader.
        let e = protocol::tls::connect("https://localhost:1", &tls_files(&kit))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
    chmod(&key, 0o600);

    // The aggregator refuses to start with an exposed key as well.
    chmod(&c.config.tls.key, 0o644);
    let e = match Server::start(&c.config).await {
        Ok(_) => panic!("the aggregator started with a world-readable key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains(&format!("chmod 600 {}", c.config.tls.key.display())),
        "{e}"
    );
    assert!(
        !c.config.state_dir.exists(),
        "the state directory was touched before the key was checked"
    );
}
