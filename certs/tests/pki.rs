//! Library tests for the consortium PKI: certificate profiles, chain verification through rustls'
//! webpki verifiers (with the CRL), renewal, revocation, kits, and error messages for bad input.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use certs::ca::{CA_KEY_FILE, CRL_FILE, LOCK_FILE};
use certs::{
    Ca, CertKind, CertsError, RevocationReason, Selector, Validity, fingerprint_sha256, inspect,
    load_certs_pem, load_crls, load_key_pem, serial_hex_from_der, site_id_from_der,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use time::{Duration, OffsetDateTime};

fn fresh_ca() -> (tempfile::TempDir, Ca) {
    fresh_ca_named("test CA")
}

fn fresh_ca_named(cn: &str) -> (tempfile::TempDir, Ca) {
    certs::ensure_ring_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(&dir.path().join("ca"), cn, 3650).unwrap();
    (dir, ca)
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    certs::pemio::parse_certs_pem(pem, Path::new("test"))
        .unwrap()
        .remove(0)
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    r.add(ca.cert_der().clone()).unwrap();
    Arc::new(r)
}

/// Verifies `leaf` as a site (TLS client) the way the aggregator does: CA root + the CA's CRL file.
fn verify_client(ca: &Ca, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let crls = load_crls(&ca.crl_path()).unwrap();
    let v = WebPkiClientVerifier::builder(roots(ca))
        .with_crls(crls)
        .build()
        .unwrap();
    v.verify_client_cert(leaf, &[], UnixTime::now()).map(|_| ())
}

/// Verifies `leaf` as the aggregator (TLS server) for `name`.
fn verify_server(ca: &Ca, leaf: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let crls = load_crls(&ca.crl_path()).unwrap();
    let v = WebPkiServerVerifier::builder(roots(ca))
        .with_crls(crls)
        .build()
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    v.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

fn cert_error(r: Result<(), rustls::Error>) -> CertificateError {
    match r {
        Err(rustls::Error::InvalidCertificate(e)) => e,
        other => panic!("expected an invalid-certificate error, got {other:?}"),
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_open_round_trip() {
    let (tmp, ca) = fresh_ca();
    let dir = tmp.path().join("ca");
    for f in ["ca.pem", "ca.key", "index.json", "crl.pem"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    let again = Ca::open(&dir).unwrap();
    assert_eq!(again.cert_pem(), ca.cert_pem());
    assert_eq!(again.subject(), "CN=test CA");
    assert!(!again.crl_repaired());
    assert!(again.index().certs.is_empty());
    assert_eq!(again.index().crl_number, 1);
    let days = (again.not_after() - OffsetDateTime::now_utc()).whole_days();
    assert!((3649..=3650).contains(&days), "{days}");

    // The empty CRL exists, is signed by the CA and lists nothing.
    let crls = load_crls(&again.crl_path()).unwrap();
    assert_eq!(crls.len(), 1);
    let (_, crl) = x509_parser::parse_x509_crl(&crls[0]).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("1".into()));
    let (_, cax) = x509_parser::parse_x509_certificate(again.cert_der()).unwrap();
    crl.verify_signature(cax.public_key()).unwrap();
    assert!(cax.is_ca());

    // Refuses to overwrite; --force moves the old CA aside.
    let err = Ca::init(&dir, "other", 10).unwrap_err();
    assert!(matches!(err, CertsError::CaExists(_)), "{err}");
    let replaced = Ca::init_overwriting(&dir, "other", 10).unwrap();
    assert_ne!(replaced.cert_pem(), ca.cert_pem());
    let backups: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert!(backups[0].path().join("ca.key").is_file());
}

#[test]
fn site_certificate_profile() {
    let (_tmp, mut ca) = fresh_ca();
    let issued = ca.issue_site("S01", Validity::default()).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_eq!(der, issued.cert_der);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        x.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "S01"
    );
    let san = x.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![x509_parser::extensions::GeneralName::URI(
            "urn:fedrad:site:S01"
        )]
    );
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    assert!(!x.is_ca());
    let days = (x.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
    assert!((364..=365).contains(&days), "{days}");

    assert_eq!(site_id_from_der(&der).unwrap(), "S01");
    assert_eq!(serial_hex_from_der(&der).unwrap(), issued.serial_hex);
    assert_eq!(issued.serial_hex.len(), 32);
    assert_eq!(
        certs::identity::cert_kind_from_der(&der).unwrap(),
        Some(CertKind::Site)
    );
    let entry = ca.index().find(&issued.serial_hex).unwrap();
    assert_eq!(entry.fingerprint_sha256, fingerprint_sha256(&der));
    assert_eq!((entry.kind, entry.id.as_str()), (CertKind::Site, "S01"));
    // The key parses and belongs to the certificate.
    let key = rcgen::KeyPair::from_pem(&issued.key_pem).unwrap();
    assert_eq!(
        x.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );
    assert!(ca.signed_this(&der));
}

#[test]
fn verification_matrix_with_crl() {
    let (_tmp, mut ca) = fresh_ca();
    let now = OffsetDateTime::now_utc();
    let good = ca.issue_site("S01", Validity::default()).unwrap();
    let doomed = ca.issue_site("S02", Validity::default()).unwrap();
    let expired = ca
        .issue_site(
            "S03",
            Validity::between(now - Duration::days(10), now - Duration::days(1)),
        )
        .unwrap();
    let future = ca
        .issue_site(
            "S04",
            Validity::between(now + Duration::days(1), now + Duration::days(10)),
        )
        .unwrap();
    let agg = ca
        .issue_aggregator(
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            Validity::default(),
        )
        .unwrap();

    // Before revocation both site certs verify.
    verify_client(&ca, &good.cert_der).unwrap();
    verify_client(&ca, &doomed.cert_der).unwrap();

    let revoked = ca
        .revoke(
            &Selector::Serial(doomed.serial_hex.clone()),
            RevocationReason::KeyCompromise,
        )
        .unwrap();
    assert_eq!(revoked, vec![doomed.serial_hex.clone()]);

    verify_client(&ca, &good.cert_der).unwrap();
    assert_eq!(
        cert_error(verify_client(&ca, &doomed.cert_der)),
        CertificateError::Revoked
    );
    assert!(matches!(
        cert_error(verify_client(&ca, &expired.cert_der)),
        CertificateError::Expired | CertificateError::ExpiredContext { .. }
    ));
    assert!(matches!(
        cert_error(verify_client(&ca, &future.cert_der)),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
    ));

    // The aggregator verifies as a server for its names, not for others.
    verify_server(&ca, &agg.cert_der, "localhost").unwrap();
    verify_server(&ca, &agg.cert_der, "127.0.0.1").unwrap();
    assert!(matches!(
        cert_error(verify_server(&ca, &agg.cert_der, "evil.example")),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
    ));
    // Disjoint EKUs: a site cannot be the server, the aggregator cannot be a client.
    assert!(matches!(
        cert_error(verify_server(&ca, &good.cert_der, "localhost")),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
    ));
    assert!(matches!(
        cert_error(verify_client(&ca, &agg.cert_der)),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
    ));

    // A certificate from another CA is unknown; an impostor CA with the same name as ours
    // is caught by the signature check.
    let (_tmp2, mut other) = fresh_ca_named("other CA");
    let foreign = other.issue_site("S01", Validity::default()).unwrap();
    assert_eq!(
        cert_error(verify_client(&ca, &foreign.cert_der)),
        CertificateError::UnknownIssuer
    );
    let (_tmp3, mut impostor) = fresh_ca();
    let fake = impostor.issue_site("S01", Validity::default()).unwrap();
    assert_eq!(
        cert_error(verify_client(&ca, &fake.cert_der)),
        CertificateError::BadSignature
    );

    // The aggregator certificate carries no site identity.
    let err = site_id_from_der(&agg.cert_der).unwrap_err().to_string();
    assert!(err.contains("aggregator"), "{err}");
}

#[test]
fn aggregator_profile() {
    let (_tmp, mut ca) = fresh_ca();
    let agg = ca
        .issue_aggregator(
            &["localhost".into(), "agg.example.org".into()],
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            Validity::days(30),
        )
        .unwrap();
    let info = inspect(&agg.cert_pem, Some(&ca)).unwrap();
    assert_eq!(info.subject, "CN=fedrad aggregator");
    assert_eq!(
        info.sans,
        vec![
            "DNS:localhost",
            "DNS:agg.example.org",
            "IP:127.0.0.1",
            "IP:::1",
            "URI:urn:fedrad:aggregator"
        ]
    );
    assert_eq!(info.extended_key_usages, vec!["serverAuth"]);
    assert_eq!(info.kind, Some(CertKind::Aggregator));
    assert_eq!(info.site_id, None);
    assert_eq!(
        ca.index().find(&agg.serial_hex).unwrap().names,
        vec!["localhost", "agg.example.org", "127.0.0.1", "::1"]
    );
    // A leaf never outlives the CA: day counts are capped, explicit bounds refused.
    let long = ca
        .issue_aggregator(&["localhost".into()], &[], Validity::days(4000))
        .unwrap();
    assert_eq!(
        inspect(&long.cert_pem, None).unwrap().not_after,
        ca.not_after()
    );
    let now = OffsetDateTime::now_utc();
    let err = ca
        .issue_aggregator(
            &["localhost".into()],
            &[],
            Validity::between(now, ca.not_after() + Duration::days(1)),
        )
        .unwrap_err();
    assert!(matches!(err, CertsError::Validity(_)), "{err}");
}

#[test]
fn renew_keeps_identity_and_changes_serial() {
    let (_tmp, mut ca) = fresh_ca();
    let first = ca.issue_site("S01", Validity::days(10)).unwrap();
    let same_key = ca
        .renew(&first.cert_pem, Validity::days(100), false)
        .unwrap();
    assert_ne!(same_key.serial_hex, first.serial_hex);
    assert_eq!(same_key.old_serial_hex, first.serial_hex);
    assert!(same_key.key_pem.is_none());
    let a = inspect(&first.cert_pem, Some(&ca)).unwrap();
    let b = inspect(&same_key.cert_pem, Some(&ca)).unwrap();
    assert_eq!(
        (&a.subject, &a.sans, &a.extended_key_usages, &a.site_id),
        (&b.subject, &b.sans, &b.extended_key_usages, &b.site_id)
    );
    assert!(b.not_after > a.not_after);
    let spki = |d: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(d)
            .unwrap()
            .1
            .public_key()
            .raw
            .to_vec()
    };
    assert_eq!(spki(&first.cert_der), spki(&same_key.cert_der));

    let new_key = ca
        .renew(&same_key.cert_pem, Validity::days(100), true)
        .unwrap();
    assert_ne!(spki(&new_key.cert_der), spki(&same_key.cert_der));
    let k = rcgen::KeyPair::from_pem(new_key.key_pem.as_deref().unwrap()).unwrap();
    assert_eq!(
        spki(&new_key.cert_der),
        rcgen::PublicKeyData::subject_public_key_info(&k)
    );
    assert_eq!(site_id_from_der(&new_key.cert_der).unwrap(), "S01");
    let entry = ca.index().find(&new_key.serial_hex).unwrap();
    assert_eq!(
        entry.renewed_from.as_deref(),
        Some(same_key.serial_hex.as_str())
    );

    // The old certificates are not revoked by renewal.
    verify_client(&ca, &first.cert_der).unwrap();
    verify_client(&ca, &new_key.cert_der).unwrap();

    // Aggregator renewal keeps its names.
    let agg = ca
        .issue_aggregator(
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            Validity::days(5),
        )
        .unwrap();
    let agg2 = ca.renew(&agg.cert_pem, Validity::days(50), false).unwrap();
    assert_eq!(agg2.kind, CertKind::Aggregator);
    verify_server(&ca, &agg2.cert_der, "127.0.0.1").unwrap();
    assert_eq!(
        inspect(&agg.cert_pem, None).unwrap().sans,
        inspect(&agg2.cert_pem, None).unwrap().sans
    );

    // Certificates from elsewhere and revoked ones are refused.
    let (_t2, mut other) = fresh_ca();
    let foreign = other.issue_site("S01", Validity::default()).unwrap();
    let err = ca
        .renew(&foreign.cert_pem, Validity::default(), false)
        .unwrap_err();
    assert!(matches!(err, CertsError::NotIssuedHere { .. }), "{err}");
    ca.revoke(
        &Selector::CertPem(first.cert_pem.clone()),
        RevocationReason::Superseded,
    )
    .unwrap();
    let err = ca
        .renew(&first.cert_pem, Validity::default(), false)
        .unwrap_err();
    assert!(matches!(err, CertsError::AlreadyRevoked { .. }), "{err}");
}

#[test]
fn revoke_by_site_id_revokes_all_and_crl_lists_them() {
    let (_tmp, mut ca) = fresh_ca();
    let a1 = ca.issue_site("S01", Validity::default()).unwrap();
    let a2 = ca.renew(&a1.cert_pem, Validity::default(), true).unwrap();
    let b = ca.issue_site("S02", Validity::default()).unwrap();
    let crl_before = ca.index().crl_number;

    let mut revoked = ca
        .revoke(
            &Selector::SiteId("S01".into()),
            RevocationReason::CessationOfOperation,
        )
        .unwrap();
    revoked.sort();
    let mut expected = vec![a1.serial_hex.clone(), a2.serial_hex.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(ca.index().crl_number, crl_before + 1);

    // The CRL on disk lists exactly those serials with the reason, under the new number.
    let crls = load_crls(&ca.crl_path()).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&crls[0]).unwrap();
    let mut listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    listed.sort();
    assert_eq!(listed, expected);
    for r in crl.iter_revoked_certificates() {
        assert_eq!(r.reason_code().map(|(_, c)| c.0), Some(5)); // cessationOfOperation
    }
    assert_eq!(
        crl.crl_number().map(|n| n.to_string()),
        Some((crl_before + 1).to_string())
    );
    let next = crl.next_update().unwrap().to_datetime();
    let days = (next - crl.last_update().to_datetime()).whole_days();
    assert_eq!(days, 30);

    // The index records the revocation, and a reopened CA sees it.
    let reopened = Ca::open(ca.dir()).unwrap();
    for s in &expected {
        let e = reopened.index().find(s).unwrap();
        assert!(e.revoked && e.revoked_at.is_some());
        assert_eq!(
            e.revocation_reason,
            Some(RevocationReason::CessationOfOperation)
        );
    }
    verify_client(&ca, &b.cert_der).unwrap();
    assert_eq!(
        cert_error(verify_client(&ca, &a2.cert_der)),
        CertificateError::Revoked
    );

    // Nothing left to revoke; unknown site; already revoked serial.
    let err = ca
        .revoke(
            &Selector::SiteId("S01".into()),
            RevocationReason::Unspecified,
        )
        .unwrap_err();
    assert!(matches!(err, CertsError::NothingToRevoke(_)), "{err}");
    let err = ca
        .revoke(
            &Selector::SiteId("S99".into()),
            RevocationReason::Unspecified,
        )
        .unwrap_err();
    assert!(err.to_string().contains("S99"), "{err}");
    let err = ca
        .revoke(
            &Selector::Serial(a1.serial_hex.to_uppercase()),
            RevocationReason::Unspecified,
        )
        .unwrap_err();
    assert!(matches!(err, CertsError::AlreadyRevoked { .. }), "{err}");
}

#[test]
fn inspect_reports_revocation_and_foreign_certs() {
    let (_tmp, mut ca) = fresh_ca();
    let s = ca.issue_site("S01", Validity::default()).unwrap();
    let info = inspect(&s.cert_pem, Some(&ca)).unwrap();
    assert_eq!(info.revoked, Some(false));
    assert_eq!(info.signed_by_ca, Some(true));
    assert_eq!(info.site_id.as_deref(), Some("S01"));
    assert!(!info.expired && !info.not_yet_valid);
    assert_eq!(info.status(), "valid");

    ca.revoke(
        &Selector::SiteId("S01".into()),
        RevocationReason::KeyCompromise,
    )
    .unwrap();
    let info = inspect(&s.cert_pem, Some(&ca)).unwrap();
    assert_eq!(info.revoked, Some(true));
    let text = info.to_string();
    assert!(text.contains("REVOKED"), "{text}");
    assert!(text.contains("keyCompromise"), "{text}");
    assert!(text.contains("site S01"), "{text}");

    // Without a CA nothing is claimed about signature or revocation.
    let plain = inspect(&s.cert_pem, None).unwrap();
    assert_eq!((plain.revoked, plain.signed_by_ca), (None, None));

    let (_t2, mut other) = fresh_ca();
    let foreign = other.issue_site("S01", Validity::default()).unwrap();
    let info = inspect(&foreign.cert_pem, Some(&ca)).unwrap();
    assert_eq!(info.signed_by_ca, Some(false));
    assert_eq!(info.revoked, None);
    assert!(info.to_string().contains("NO (not issued by this CA)"));

    let now = OffsetDateTime::now_utc();
    let old = ca
        .issue_site(
            "S02",
            Validity::between(now - Duration::days(3), now - Duration::days(2)),
        )
        .unwrap();
    let info = inspect(&old.cert_pem, Some(&ca)).unwrap();
    assert!(info.expired);
    assert_eq!(info.status(), "EXPIRED");
}

#[test]
fn site_and_aggregator_kits() {
    let (tmp, mut ca) = fresh_ca();
    let kits = tmp.path().join("kits");
    let kit = ca
        .write_site_kit(
            "S01",
            &kits,
            "https://agg.example.org:7443",
            Validity::default(),
        )
        .unwrap();
    assert_eq!(kit, kits.join("S01"));
    for f in ["ca.pem", "site.pem", "site.key", "site.toml", "policy.toml"] {
        assert!(kit.join(f).is_file(), "{f}");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&kit.join("site.key")), 0o600);
        assert_eq!(mode(&kit.join("site.pem")), 0o644);
    }
    let toml: toml::Table = fs::read_to_string(kit.join("site.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(toml["aggregator_name"].as_str(), Some("agg.example.org"));
    assert_eq!(toml["cert"].as_str(), Some("site.pem"));
    assert_eq!(
        fs::read_to_string(kit.join("policy.toml")).unwrap(),
        certs::kit::POLICY_TOML
    );
    assert_eq!(
        fs::read_to_string(kit.join("ca.pem")).unwrap(),
        ca.cert_pem()
    );

    // Kit material is consistent: cert verifies, key matches, key perms are private.
    let cert = load_certs_pem(&kit.join("site.pem")).unwrap().remove(0);
    verify_client(&ca, &cert).unwrap();
    let key = load_key_pem(&kit.join("site.key")).unwrap();
    assert!(!key.permissions.is_exposed());
    let kp = rcgen::KeyPair::from_pem(&key.pem).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
    assert_eq!(
        x.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&kp).as_slice()
    );

    // A second kit for the same site into the same folder is refused without touching the index.
    let n = ca.index().certs.len();
    let err = ca
        .write_site_kit("S01", &kits, "https://localhost:7443", Validity::default())
        .unwrap_err();
    assert!(matches!(err, CertsError::KitExists(_)), "{err}");
    assert_eq!(ca.index().certs.len(), n);
    // A bad URL is refused before anything is issued.
    let err = ca
        .write_site_kit("S02", &kits, "http://plain", Validity::default())
        .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
    assert_eq!(Ca::open(ca.dir()).unwrap().index().certs.len(), n);

    let agg_dir = tmp.path().join("agg");
    ca.write_aggregator_kit(&agg_dir, &["localhost".into()], &[], Validity::default())
        .unwrap();
    for f in [
        "ca.pem",
        "aggregator.pem",
        "aggregator.key",
        "crl.pem",
        "README.txt",
    ] {
        assert!(agg_dir.join(f).is_file(), "{f}");
    }
    #[cfg(unix)]
    assert_eq!(mode(&agg_dir.join("aggregator.key")), 0o600);
    assert_eq!(load_crls(&agg_dir.join("crl.pem")).unwrap().len(), 1);
    let agg = load_certs_pem(&agg_dir.join("aggregator.pem"))
        .unwrap()
        .remove(0);
    verify_server(&ca, &agg, "localhost").unwrap();
}

#[test]
fn bad_input_gives_one_line_errors_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = |e: &dyn std::fmt::Display| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "multi-line error: {s}");
        s
    };

    let missing = tmp.path().join("no-such-ca");
    let e = one_line(&Ca::open(&missing).unwrap_err());
    assert!(e.contains("no-such-ca") && e.contains("certs init"), "{e}");

    let (_t, mut ca) = fresh_ca();
    let e = one_line(&ca.issue_site("../x", Validity::default()).unwrap_err());
    assert!(e.contains("\"../x\"") && e.contains("'.'"), "{e}");
    let e = one_line(
        &ca.write_site_kit(
            "../x",
            tmp.path(),
            "https://localhost:1",
            Validity::default(),
        )
        .unwrap_err(),
    );
    assert!(e.contains("../x"), "{e}");
    assert!(!tmp.path().parent().unwrap().join("x").exists());
    let e = one_line(&ca.issue_site("", Validity::default()).unwrap_err());
    assert!(e.contains("empty"), "{e}");

    // Corrupt CA key.
    let key_path = ca.dir().join(CA_KEY_FILE);
    fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nnot base64!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = one_line(&Ca::open(ca.dir()).unwrap_err());
    assert!(e.contains("ca.key"), "{e}");
    fs::write(&key_path, "garbage").unwrap();
    let e = one_line(&Ca::open(ca.dir()).unwrap_err());
    assert!(e.contains("ca.key"), "{e}");
    // A valid key that belongs to another CA.
    fs::write(
        &key_path,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let e = one_line(&Ca::open(ca.dir()).unwrap_err());
    assert!(e.contains("ca.key") && e.contains("does not belong"), "{e}");
    fs::remove_file(&key_path).unwrap();
    let e = one_line(&Ca::open(ca.dir()).unwrap_err());
    assert!(e.contains("ca.key"), "{e}");

    // Corrupt index.
    let (_t2, ca2) = fresh_ca();
    fs::write(ca2.dir().join("index.json"), "{").unwrap();
    let e = one_line(&Ca::open(ca2.dir()).unwrap_err());
    assert!(e.contains("index.json"), "{e}");

    // Loader helpers name the file.
    let e = one_line(&load_crls(&ca2.cert_path()).unwrap_err());
    assert!(e.contains("ca.pem") && e.contains("CRL"), "{e}");
    let e = one_line(&load_certs_pem(&missing.join("x.pem")).unwrap_err());
    assert!(e.contains("x.pem"), "{e}");
    let e = one_line(&load_key_pem(&ca2.cert_path()).unwrap_err());
    assert!(e.contains("ca.pem") && e.contains("PRIVATE KEY"), "{e}");

    // Bad serial text.
    let (_t3, mut ca3) = fresh_ca();
    let e = one_line(
        &ca3.revoke(
            &Selector::Serial("zz".into()),
            RevocationReason::Unspecified,
        )
        .unwrap_err(),
    );
    assert!(e.contains("zz"), "{e}");
}

#[cfg(unix)]
#[test]
fn key_permissions_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, mut ca) = fresh_ca();
    let kit = ca
        .write_site_kit(
            "S01",
            tmp.path(),
            "https://localhost:7443",
            Validity::default(),
        )
        .unwrap();
    let key = kit.join("site.key");
    assert!(!load_key_pem(&key).unwrap().permissions.is_exposed());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let loaded = load_key_pem(&key).unwrap();
    assert!(loaded.permissions.is_exposed());
    assert_eq!(loaded.permissions.mode, Some(0o644));
    let w = loaded.permissions.warning(&key).unwrap();
    assert!(w.contains("chmod 600"), "{w}");
    // The TLS helper refuses an exposed key.
    let err = certs::tls::client_config_from_files(
        &kit.join("ca.pem"),
        None,
        &kit.join("site.pem"),
        &key,
    )
    .unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn stale_or_missing_crl_is_repaired_on_open() {
    let (_tmp, mut ca) = fresh_ca();
    let s = ca.issue_site("S01", Validity::default()).unwrap();
    let empty_crl = fs::read(ca.crl_path()).unwrap();
    ca.revoke(
        &Selector::SiteId("S01".into()),
        RevocationReason::KeyCompromise,
    )
    .unwrap();
    // Simulate a crash after index.json was written but before crl.pem was.
    fs::write(ca.crl_path(), &empty_crl).unwrap();
    let reopened = Ca::open(ca.dir()).unwrap();
    assert!(reopened.crl_repaired());
    assert_eq!(
        cert_error(verify_client(&reopened, &s.cert_der)),
        CertificateError::Revoked
    );
    fs::remove_file(ca.dir().join(CRL_FILE)).unwrap();
    let reopened = Ca::open(ca.dir()).unwrap();
    assert!(reopened.crl_repaired());
    assert_eq!(
        cert_error(verify_client(&reopened, &s.cert_der)),
        CertificateError::Revoked
    );
    assert!(!Ca::open(ca.dir()).unwrap().crl_repaired());
}

#[test]
fn two_handles_do_not_lose_updates_and_lock_is_enforced() {
    let (_tmp, mut a) = fresh_ca();
    let mut b = Ca::open(a.dir()).unwrap();
    let s1 = a.issue_site("S01", Validity::default()).unwrap();
    let s2 = b.issue_site("S02", Validity::default()).unwrap();
    let reopened = Ca::open(a.dir()).unwrap();
    assert!(reopened.index().find(&s1.serial_hex).is_some());
    assert!(reopened.index().find(&s2.serial_hex).is_some());

    // While another process holds the lock, mutations fail fast with a clear error.
    let lock = fs::File::options()
        .write(true)
        .open(a.dir().join(LOCK_FILE))
        .unwrap();
    lock.lock().unwrap();
    let err = a.issue_site("S03", Validity::default()).unwrap_err();
    assert!(matches!(err, CertsError::Locked(_)), "{err}");
    drop(lock);
    a.issue_site("S03", Validity::default()).unwrap();
}

/// Drives a rustls handshake between two in-memory connections.
fn handshake(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn tls_helpers_complete_mutual_tls_and_reject_revoked_sites() {
    let (tmp, mut ca) = fresh_ca();
    let agg_dir = tmp.path().join("agg");
    ca.write_aggregator_kit(&agg_dir, &["localhost".into()], &[], Validity::default())
        .unwrap();
    let good = ca
        .write_site_kit(
            "S01",
            tmp.path(),
            "https://localhost:7443",
            Validity::default(),
        )
        .unwrap();
    let bad = ca
        .write_site_kit(
            "S02",
            tmp.path(),
            "https://localhost:7443",
            Validity::default(),
        )
        .unwrap();
    ca.revoke(
        &Selector::SiteId("S02".into()),
        RevocationReason::KeyCompromise,
    )
    .unwrap();

    let server_cfg = Arc::new(
        certs::tls::server_config_from_files(
            &agg_dir.join("ca.pem"),
            &ca.crl_path(),
            &agg_dir.join("aggregator.pem"),
            &agg_dir.join("aggregator.key"),
        )
        .unwrap(),
    );
    let connect = |kit: &Path| {
        let cfg = certs::tls::client_config_from_files(
            &kit.join("ca.pem"),
            None,
            &kit.join("site.pem"),
            &kit.join("site.key"),
        )
        .unwrap();
        let mut c = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut s = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
        let r = handshake(&mut c, &mut s);
        (r, s)
    };

    let (r, s) = connect(&good);
    r.unwrap();
    let peer = &s.peer_certificates().unwrap()[0];
    assert_eq!(site_id_from_der(peer).unwrap(), "S01");

    let (r, _) = connect(&bad);
    assert_eq!(
        r.unwrap_err(),
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
}

/// A leaf signed by `ca` with exactly these SANs and EKUs (things `Ca` refuses to issue).
fn forged_leaf(
    ca: &Ca,
    uris: &[&str],
    dns: &[&str],
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> CertificateDer<'static> {
    let key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(ca.dir().join(CA_KEY_FILE)).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert_der(), key).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = dns
        .iter()
        .map(|d| rcgen::SanType::DnsName((*d).try_into().unwrap()))
        .chain(
            uris.iter()
                .map(|u| rcgen::SanType::URI((*u).try_into().unwrap())),
        )
        .collect();
    p.extended_key_usages = ekus;
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(1);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    p.signed_by(&leaf_key, &issuer).unwrap().der().clone()
}

#[test]
fn aggregator_verifier_requires_the_aggregator_identity() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let (_tmp, mut ca) = fresh_ca();
    let roots = roots(&ca);
    let webpki = || {
        WebPkiServerVerifier::builder(roots.clone())
            .build()
            .unwrap()
    };
    let verifier = certs::tls::AggregatorVerifier::new(webpki());
    let name = ServerName::try_from("localhost").unwrap();
    let check = |leaf: &CertificateDer<'_>| {
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    };

    let agg = ca
        .issue_aggregator(&["localhost".into()], &[], Validity::default())
        .unwrap();
    check(&agg.cert_der).expect("the aggregator's certificate is accepted");

    // A genuine site certificate fails webpki already (clientAuth only, no DNS name).
    let site = ca.issue_site("S01", Validity::default()).unwrap();
    assert!(check(&site.cert_der).is_err());

    // Certificates webpki accepts for "localhost" but that are not the aggregator's.
    for (uris, needle) in [
        (&["urn:fedrad:site:S02"][..], "site S02"),
        (&[][..], "no fedrad identity"),
        (
            &["urn:fedrad:aggregator", "urn:fedrad:site:S02"][..],
            "site S02",
        ),
    ] {
        let leaf = forged_leaf(&ca, uris, &["localhost"], vec![ServerAuth, ClientAuth]);
        webpki()
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .expect("webpki alone accepts it");
        let e = match check(&leaf) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => e.to_string(),
            other => panic!("{uris:?}: expected a refusal, got {other:?}"),
        };
        assert!(
            e.contains("not the aggregator's") && e.contains(needle),
            "{uris:?}: {e}"
        );
    }
    assert_eq!(certs::identity::require_aggregator(&agg.cert_der), Ok(()));
}
