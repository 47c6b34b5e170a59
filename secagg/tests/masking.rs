//! End-to-end properties of masked aggregation: exact cancellation, the fixed-point precision
//! bound over 2–50 sites, determinism, round separation, and the dropout restart.

mod common;

use common::{STUDY, federation, random_values, site_ids};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use secagg::{
    FixedPoint, Layout, MaskedRound, RoundSpec, RoundStatus, SecAggError, SecAggPolicy,
    decode_counts, encode_counts,
};

/// Sum of plain f64 vectors, element-wise, in site order (what an unmasked run computes).
fn plain_sum(vectors: &[Vec<f64>]) -> Vec<f64> {
    let mut out = vec![0.0; vectors[0].len()];
    for v in vectors {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x;
        }
    }
    out
}

#[test]
fn masked_sum_equals_plain_sum_within_bound_for_2_to_50_sites() {
    let policy = SecAggPolicy::new(2).unwrap();
    let fp = FixedPoint::default();
    let len = 97;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (k, &n) in [2usize, 3, 4, 5, 8, 13, 21, 34, 50].iter().enumerate() {
        let mut sites = federation(n, 100 + k as u64, policy);
        let spec = RoundSpec::new(STUDY, 1, site_ids(n)).unwrap();
        let layout = Layout::single("stats", len, fp);
        let mut round = MaskedRound::new(spec.clone(), len, &policy).unwrap();
        let inputs: Vec<Vec<f64>> = (0..n).map(|_| random_values(&mut rng, len)).collect();
        let mut encoded_sum = vec![0u64; len];
        for (site, x) in sites.iter_mut().zip(&inputs) {
            let enc = layout.encode(&[x], n).unwrap();
            for (s, e) in encoded_sum.iter_mut().zip(&enc) {
                *s = s.wrapping_add(*e);
            }
            let masked = site.mask_values(&spec, &layout, &[x]).unwrap();
            assert_ne!(
                masked.values, enc,
                "n={n}: a masked vector must differ from its encoding"
            );
            round.accept(&masked).unwrap();
        }
        let sum = round.complete().unwrap();
        // Masks cancel exactly: the ring sum equals the sum of the plain encodings bit for bit.
        assert_eq!(sum, encoded_sum, "n={n}: masks did not cancel");

        let decoded = &layout.decode(&sum).unwrap()[0];
        let plain = plain_sum(&inputs);
        let mut worst = 0.0f64;
        for j in 0..len {
            let abs_sum: f64 = inputs.iter().map(|v| v[j].abs()).sum();
            // n·2^-(F+1) from fixed point, plus the f64 rounding of the plain sum itself
            // ((n-1)·2^-53·Σ|x|) and of the decoded result (half an ulp), generously 2^-50·Σ|x|.
            let bound = fp.sum_error_bound(n) + abs_sum * 2f64.powi(-50);
            let err = (decoded[j] - plain[j]).abs();
            assert!(
                err <= bound,
                "n={n} j={j}: |masked − plain| = {err:e} exceeds the bound {bound:e}"
            );
            worst = worst.max(err / fp.sum_error_bound(n));
        }
        // The comparison is not vacuous: fixed-point rounding really shows up in the result.
        assert!(
            worst > 0.01,
            "n={n}: no rounding error observed at all ({worst})"
        );
    }
}

#[test]
fn representable_values_sum_exactly_and_counts_are_exact() {
    // Values on the 2^-F grid have no encoding error: the masked sum must be exact.
    let policy = SecAggPolicy::default();
    let fp = FixedPoint::new(20).unwrap();
    let n = 6;
    let mut sites = federation(n, 3, policy);
    let spec = RoundSpec::new(STUDY, 11, site_ids(n)).unwrap();
    let layout = Layout::new()
        .with("xtwx", 3, fp)
        .with("counts", 4, FixedPoint::integer());
    let mut round = MaskedRound::new(spec.clone(), layout.total_len(), &policy).unwrap();
    let mut expect_x = [0.0f64; 3];
    let mut expect_c = [0.0f64; 4];
    for (i, site) in sites.iter_mut().enumerate() {
        let x = [
            i as f64 * 0.25 - 1.0,
            (i as f64 + 1.0) * 2f64.powi(-20),
            -1234.5 * i as f64,
        ];
        let c = [i as f64, 7.0, 1e9 + i as f64, 0.0];
        for j in 0..3 {
            expect_x[j] += x[j];
        }
        for j in 0..4 {
            expect_c[j] += c[j];
        }
        round
            .accept(&site.mask_values(&spec, &layout, &[&x, &c]).unwrap())
            .unwrap();
    }
    let parts = layout.decode(&round.complete().unwrap()).unwrap();
    assert_eq!(parts[0], expect_x);
    assert_eq!(parts[1], expect_c);

    // Integer counts through the i64 path.
    let mut sites = federation(3, 4, policy);
    let spec = RoundSpec::new(STUDY, 12, site_ids(3)).unwrap();
    let mut round = MaskedRound::new(spec.clone(), 2, &policy).unwrap();
    for (i, site) in sites.iter_mut().enumerate() {
        let enc = encode_counts(&[i as i64 * 10, -(i as i64)], 3).unwrap();
        round.accept(&site.mask(&spec, enc).unwrap()).unwrap();
    }
    assert_eq!(decode_counts(&round.complete().unwrap()), vec![30, -3]);
}

#[test]
fn masking_is_deterministic_given_keys_and_round() {
    let policy = SecAggPolicy::default();
    let spec = RoundSpec::new(STUDY, 5, site_ids(4)).unwrap();
    let layout = Layout::single("g", 50, FixedPoint::default());
    let x: Vec<f64> = (0..50).map(|i| i as f64 / 7.0).collect();
    let a = federation(4, 42, policy)[2]
        .clone()
        .mask_values(&spec, &layout, &[&x])
        .unwrap();
    let b = federation(4, 42, policy)[2]
        .clone()
        .mask_values(&spec, &layout, &[&x])
        .unwrap();
    assert_eq!(
        a, b,
        "same keys, round and input must give the same masked vector"
    );
    let c = federation(4, 43, policy)[2]
        .clone()
        .mask_values(&spec, &layout, &[&x])
        .unwrap();
    assert_ne!(
        a.values, c.values,
        "different keys must give different masks"
    );
}

#[test]
fn session_survives_serialisation_and_keeps_its_used_rounds() {
    let policy = SecAggPolicy::default();
    let mut sites = federation(3, 9, policy);
    let spec1 = RoundSpec::new(STUDY, 1, site_ids(3)).unwrap();
    let spec2 = RoundSpec::new(STUDY, 2, site_ids(3)).unwrap();
    sites[0].mask(&spec1, vec![1, 2, 3]).unwrap();
    let json = serde_json::to_string(&sites[0]).unwrap();
    let mut restored: secagg::SiteSession = serde_json::from_str(&json).unwrap();
    assert!(restored.has_used_round(1));
    assert!(matches!(
        restored.mask(&spec1, vec![1, 2, 4]),
        Err(SecAggError::RoundReused { round_id: 1, .. })
    ));
    // An exact repeat (a retry after a lost reply or a restart) re-sends the identical vector:
    // the same pad over the same input reveals nothing new.
    let first = sites[0].clone().mask(&spec1, vec![1, 2, 3]).unwrap();
    assert_eq!(restored.mask(&spec1, vec![1, 2, 3]).unwrap(), first);
    // The restored session (pair keys re-derived lazily) masks exactly like the original.
    let a = sites[0].mask(&spec2, vec![4, 5, 6]).unwrap();
    let b = restored.mask(&spec2, vec![4, 5, 6]).unwrap();
    assert_eq!(a, b);
    // Debug output does not leak the secret.
    let secret_hex = &json[json.find("\"secret\":\"").unwrap() + 10..][..64];
    assert!(!format!("{:?}", sites[0]).contains(secret_hex));
}

#[test]
fn dropout_restarts_without_the_missing_site_and_sums_the_survivors() {
    let policy = SecAggPolicy::default();
    let n = 5;
    let fp = FixedPoint::default();
    let len = 40;
    let layout = Layout::single("xtwx", len, fp);
    let mut sites = federation(n, 77, policy);
    let mut rng = ChaCha8Rng::seed_from_u64(78);
    let inputs: Vec<Vec<f64>> = (0..n).map(|_| random_values(&mut rng, len)).collect();

    let spec1 = RoundSpec::new(STUDY, 100, site_ids(n)).unwrap();
    let mut round1 = MaskedRound::new(spec1.clone(), len, &policy).unwrap();
    let dropped = 2;
    let mut late = None;
    let mut sent1 = Vec::new();
    for (i, site) in sites.iter_mut().enumerate() {
        let masked = site.mask_values(&spec1, &layout, &[&inputs[i]]).unwrap();
        if i == dropped {
            late = Some(masked); // never reaches the aggregator in time
            continue;
        }
        round1.accept(&masked).unwrap();
        sent1.push(masked);
    }
    assert_eq!(round1.missing(), vec!["site-02".to_string()]);
    match round1.complete() {
        Err(SecAggError::Incomplete {
            round_id: 100,
            missing,
        }) => {
            assert_eq!(missing, vec!["site-02".to_string()])
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }

    let survivors_plain: Vec<Vec<f64>> = inputs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dropped)
        .map(|(_, v)| v.clone())
        .collect();
    let expected = plain_sum(&survivors_plain);

    // Why a restart is needed: the partial sum of round 1 still carries the dropped site's masks.
    let mut partial_ring = vec![0u64; len];
    for m in &sent1 {
        for (a, b) in partial_ring.iter_mut().zip(&m.values) {
            *a = a.wrapping_add(*b);
        }
    }
    let partial = fp.decode_slice(&partial_ring);
    let far = partial
        .iter()
        .zip(&expected)
        .filter(|(p, e)| (*p - *e).abs() > 1.0)
        .count();
    assert!(
        far >= len - 1,
        "partial sum unexpectedly close to the survivors' sum"
    );

    // Restart: fresh round id, survivors only.
    let mut round2 = round1.restart_without_missing(101, &policy).unwrap();
    assert_eq!(
        round2.spec().participants,
        vec!["site-00", "site-01", "site-03", "site-04"]
    );
    assert!(round2.received().is_empty());
    // A late vector for the first attempt is refused by the restarted round.
    assert_eq!(
        round2.accept(&late.unwrap()),
        Err(SecAggError::RoundMismatch {
            expected: 101,
            got: 100
        })
    );
    let spec2 = round2.spec().clone();
    // The dropped site is not asked again; if it were, it refuses (not a participant).
    assert!(matches!(
        sites[dropped].mask_values(&spec2, &layout, &[&inputs[dropped]]),
        Err(SecAggError::NotAParticipant { .. })
    ));
    let mut status = RoundStatus::Waiting { missing: 4 };
    for (i, site) in sites.iter_mut().enumerate() {
        if i == dropped {
            continue;
        }
        status = round2
            .accept(&site.mask_values(&spec2, &layout, &[&inputs[i]]).unwrap())
            .unwrap();
    }
    assert_eq!(status, RoundStatus::Complete);
    let got = &layout.decode(&round2.complete().unwrap()).unwrap()[0];
    for j in 0..len {
        assert!(
            (got[j] - expected[j]).abs() <= fp.sum_error_bound(n - 1) + 1e-9,
            "j={j}: {} vs {}",
            got[j],
            expected[j]
        );
    }

    // Restarting again down to 2 survivors violates the default minimum of 3.
    let too_small = round2.restart_without(
        &["site-00".to_string(), "site-01".to_string()],
        102,
        &policy,
    );
    assert_eq!(
        too_small.unwrap_err(),
        SecAggError::TooFewParticipants { got: 2, min: 3 }
    );
    // A restart must take a fresh round id.
    assert_eq!(
        round2
            .restart_without(&["site-00".to_string()], 101, &policy)
            .unwrap_err(),
        SecAggError::RestartRoundIdReused(101)
    );
}

#[test]
fn overflow_is_caught_on_the_site_before_sending() {
    let policy = SecAggPolicy::default();
    let n = 4;
    let fp = FixedPoint::default();
    let mut sites = federation(n, 5, policy);
    let spec = RoundSpec::new(STUDY, 1, site_ids(n)).unwrap();
    let layout = Layout::new().with("ok", 1, fp).with("xtwx", 2, fp);
    // Per-value limit at F = 24, n = 4: ⌊(2^63−1)/4⌋·2^−24 ≈ 1.37e11.
    let limit = fp.max_abs(n);
    assert!((limit - 2f64.powi(61 - 24)).abs() / limit < 1e-12);
    let err = sites[0]
        .mask_values(&spec, &layout, &[&[1.0], &[0.0, 2.0 * limit]])
        .unwrap_err();
    match &err {
        SecAggError::Segment { segment, source } => {
            assert_eq!(segment, "xtwx");
            assert!(matches!(
                **source,
                SecAggError::Overflow {
                    index: 1,
                    participants: 4,
                    frac_bits: 24,
                    ..
                }
            ));
        }
        other => panic!("expected a segment overflow, got {other:?}"),
    }
    assert!(err.to_string().contains("xtwx"), "{err}");
    // Nothing was recorded: after fixing the input the site can still mask this round.
    assert!(!sites[0].has_used_round(1));
    let nan = sites[0].mask_values(&spec, &layout, &[&[f64::NAN], &[0.0, 0.0]]);
    assert!(matches!(
        nan,
        Err(SecAggError::Segment { ref source, .. }) if matches!(**source, SecAggError::NonFinite { .. })
    ));

    // At the limit itself every site may contribute and the total does not wrap.
    let units = FixedPoint::max_units(n);
    let mut round = MaskedRound::new(spec.clone(), 3, &policy).unwrap();
    for site in &mut sites {
        let enc = encode_counts(&[units, -units, 1], n).unwrap();
        round.accept(&site.mask(&spec, enc).unwrap()).unwrap();
    }
    assert_eq!(
        decode_counts(&round.complete().unwrap()),
        vec![4 * units, -4 * units, 4]
    );
    assert!(matches!(
        encode_counts(&[units + 1], n),
        Err(SecAggError::CountOverflow { index: 0, .. })
    ));
}

#[test]
fn sites_refuse_unsafe_rounds() {
    let policy = SecAggPolicy::default();
    let mut sites = federation(4, 21, policy);
    let layout = Layout::single("v", 2, FixedPoint::default());
    let x = [1.0, 2.0];

    // Too few participants (2 < 3): each site could read the other's value off the sum.
    let two = RoundSpec::new(STUDY, 1, ["site-00", "site-01"]).unwrap();
    assert_eq!(
        sites[0].mask_values(&two, &layout, &[&x]).unwrap_err(),
        SecAggError::TooFewParticipants { got: 2, min: 3 }
    );
    assert_eq!(
        MaskedRound::new(two, 2, &policy).unwrap_err(),
        SecAggError::TooFewParticipants { got: 2, min: 3 }
    );
    assert_eq!(SecAggPolicy::new(1), Err(SecAggError::InvalidPolicy(1)));

    // Round ids are single-use, also when the aggregator changes the participant set.
    let spec = RoundSpec::new(STUDY, 2, site_ids(4)).unwrap();
    sites[0].mask_values(&spec, &layout, &[&x]).unwrap();
    let same_id_smaller_set = RoundSpec::new(STUDY, 2, site_ids(3)).unwrap();
    assert!(matches!(
        sites[0].mask_values(&same_id_smaller_set, &layout, &[&x]),
        Err(SecAggError::RoundReused { round_id: 2, .. })
    ));

    // A site outside the relayed key list, another study, a non-sorted list.
    let unknown = RoundSpec::new(STUDY, 3, ["site-00", "site-01", "site-99"]).unwrap();
    assert_eq!(
        sites[0].check_round(&unknown),
        Err(SecAggError::UnknownPeer("site-99".into()))
    );
    let other_study = RoundSpec::new("other", 3, site_ids(4)).unwrap();
    assert!(matches!(
        sites[0].check_round(&other_study),
        Err(SecAggError::StudyMismatch { .. })
    ));
    let mut unsorted = RoundSpec::new(STUDY, 3, site_ids(4)).unwrap();
    unsorted.participants.swap(0, 1);
    assert_eq!(
        sites[0].check_round(&unsorted),
        Err(SecAggError::UnsortedParticipants)
    );
    assert!(matches!(
        RoundSpec::new(STUDY, 3, ["a", "b", "a"]),
        Err(SecAggError::DuplicateParticipant(_))
    ));
}

#[test]
fn relayed_keys_are_pinned_and_substitution_is_detected() {
    let policy = SecAggPolicy::default();
    let mut sites = federation(3, 31, policy);
    let mut anns: Vec<_> = sites.iter().map(|s| s.announcement()).collect();
    // Relaying the same list again is fine.
    sites[0].accept_peer_keys(&anns).unwrap();

    // The relay swaps site-01's key for one it controls.
    let evil = secagg::SiteSecret::from_bytes([0x5a; 32]).public_key();
    anns[1].public_key = evil;
    assert_eq!(
        sites[0].accept_peer_keys(&anns),
        Err(SecAggError::KeyChanged {
            site: "site-01".into()
        })
    );
    // The relay swaps our own key.
    let mut anns2: Vec<_> = sites.iter().map(|s| s.announcement()).collect();
    anns2[0].public_key = evil;
    assert_eq!(
        sites[0].accept_peer_keys(&anns2),
        Err(SecAggError::OwnKeyMismatch("site-00".into()))
    );
    // A low-order key for a new site is refused and nothing from that list is pinned.
    let mut anns3: Vec<_> = sites.iter().map(|s| s.announcement()).collect();
    anns3.push(secagg::KeyAnnouncement {
        site_id: "site-07".into(),
        public_key: evil,
    });
    anns3.push(secagg::KeyAnnouncement {
        site_id: "site-08".into(),
        public_key: [0; 32],
    });
    assert_eq!(
        sites[0].accept_peer_keys(&anns3),
        Err(SecAggError::NonContributory("site-08".into()))
    );
    assert_eq!(sites[0].peer_key("site-07"), None);
    assert_eq!(sites[0].peer_key("site-01"), Some(sites[1].public_key()));
}

#[test]
fn aggregator_refuses_malformed_submissions() {
    let policy = SecAggPolicy::default();
    let mut sites = federation(4, 55, policy);
    let spec = RoundSpec::new(STUDY, 9, site_ids(3)).unwrap();
    let mut round = MaskedRound::new(spec.clone(), 3, &policy).unwrap();
    let m0 = sites[0].mask(&spec, vec![1, 2, 3]).unwrap();
    assert_eq!(round.accept(&m0), Ok(RoundStatus::Waiting { missing: 2 }));
    assert_eq!(
        round.accept(&m0),
        Err(SecAggError::DuplicateSubmission("site-00".into()))
    );
    let mut outsider = m0.clone();
    outsider.site_id = "site-03".into();
    assert!(matches!(
        round.accept(&outsider),
        Err(SecAggError::NotAParticipant { .. })
    ));
    let short = sites[1].mask(&spec, vec![1, 2]).unwrap();
    assert_eq!(
        round.accept(&short),
        Err(SecAggError::LengthMismatch {
            expected: 3,
            got: 2
        })
    );
    // Refused vectors leave the state unchanged.
    assert_eq!(round.received().len(), 1);
    let json = serde_json::to_string(&round).unwrap();
    let back: MaskedRound = serde_json::from_str(&json).unwrap();
    assert_eq!(back, round);
}
