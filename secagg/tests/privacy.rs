//! What the aggregator sees: a single masked vector looks uniform and is uncorrelated with its
//! plaintext, no strict subset of the masked vectors unmasks, and masks of different rounds (or
//! participant sets) are unrelated. Each statistical check is also run on unmasked data to show
//! that the detector would fire.

mod common;

use common::{
    STUDY, byte_chi_square, chi_square_critical_255, federation, random_values, site_ids,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secagg::{FixedPoint, Layout, MaskedRound, MaskedVector, RoundSpec, SecAggPolicy};

/// Tail probability for the chi-square checks: seeds are fixed so the tests are deterministic,
/// and 1e-6 keeps the chance that a correct implementation fails for an unlucky seed negligible.
const P_FAIL: f64 = 1e-6;

#[test]
fn single_masked_vector_has_uniform_bytes() {
    let policy = SecAggPolicy::default();
    let n = 3;
    let mut sites = federation(n, 1, policy);
    let len = 8192; // 65 536 bytes, 256 expected per byte value
    let fp = FixedPoint::default();
    let layout = Layout::single("xtwx", len, fp);
    // A very structured plaintext: a slow ramp of small values (encodings are mostly 0x00/0xff).
    let x: Vec<f64> = (0..len).map(|i| (i as f64 - 4096.0) * 1e-3).collect();
    let critical = chi_square_critical_255(P_FAIL);

    let plain = layout.encode(&[&x], n).unwrap();
    let chi_plain = byte_chi_square(&plain);
    assert!(
        chi_plain > 10.0 * critical,
        "detector check: the unmasked encoding should be far from uniform ({chi_plain})"
    );
    for round_id in 1..=4 {
        let spec = RoundSpec::new(STUDY, round_id, site_ids(n)).unwrap();
        let masked = sites[0].mask_values(&spec, &layout, &[&x]).unwrap();
        let chi = byte_chi_square(&masked.values);
        assert!(
            chi < critical,
            "round {round_id}: masked bytes fail uniformity: chi2 = {chi:.1} ≥ {critical:.1}"
        );
    }
}

/// Pearson correlation coefficient.
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn masked_value_is_uncorrelated_with_its_plaintext() {
    let policy = SecAggPolicy::default();
    let n = 3;
    let mut sites = federation(n, 2, policy);
    let layout = Layout::single("g", 1, FixedPoint::default());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let trials = 4000;
    let to_unit = |v: u64| v as f64 / 2f64.powi(64);
    let (mut xs, mut masked, mut masked_low, mut plain) = (vec![], vec![], vec![], vec![]);
    for t in 0..trials {
        let x: f64 = rng.gen_range(-1.0..1.0);
        let spec = RoundSpec::new(STUDY, t as u64, site_ids(n)).unwrap();
        let m = sites[0]
            .mask_values(&spec, &layout, &[&[x]])
            .unwrap()
            .values[0];
        xs.push(x);
        masked.push(to_unit(m));
        masked_low.push((m & 0xffff_ffff) as f64);
        plain.push(to_unit(layout.encode(&[&[x]], n).unwrap()[0]));
    }
    // Under independence r ~ N(0, 1/trials): 5 standard errors ≈ 0.079.
    let tol = 5.0 / (trials as f64).sqrt();
    let r_plain = pearson(&xs, &plain);
    assert!(
        r_plain.abs() > 0.5,
        "detector check: the unmasked encoding is strongly correlated with x (r = {r_plain})"
    );
    let r = pearson(&xs, &masked);
    let r_low = pearson(&xs, &masked_low);
    assert!(
        r.abs() < tol,
        "masked value correlates with plaintext: r = {r}"
    );
    assert!(
        r_low.abs() < tol,
        "low word correlates with plaintext: r = {r_low}"
    );
}

/// Wrapping sum of the chosen vectors.
fn ring_sum<'a>(vs: impl Iterator<Item = &'a MaskedVector>, len: usize) -> Vec<u64> {
    let mut s = vec![0u64; len];
    for v in vs {
        for (a, b) in s.iter_mut().zip(&v.values) {
            *a = a.wrapping_add(*b);
        }
    }
    s
}

#[test]
fn no_strict_subset_of_masked_vectors_reveals_its_plaintext_sum() {
    // The aggregator holds all masked vectors of a round. For every strict, non-empty subset S of
    // the sites (including single sites), the sum over S is still masked by the pads S shares with
    // the sites outside S: it must not equal the sum of S's encodings in any coordinate, and the
    // difference must look uniform. Only the full set unmasks.
    let policy = SecAggPolicy::default();
    let n = 5;
    let len = 2048;
    let mut sites = federation(n, 4, policy);
    let fp = FixedPoint::default();
    let layout = Layout::single("xtwx", len, fp);
    let spec = RoundSpec::new(STUDY, 1, site_ids(n)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let inputs: Vec<Vec<f64>> = (0..n).map(|_| random_values(&mut rng, len)).collect();
    let encoded: Vec<Vec<u64>> = inputs
        .iter()
        .map(|x| layout.encode(&[x], n).unwrap())
        .collect();
    let masked: Vec<MaskedVector> = sites
        .iter_mut()
        .zip(&inputs)
        .map(|(s, x)| s.mask_values(&spec, &layout, &[x]).unwrap())
        .collect();
    // Bonferroni over the 30 subsets.
    let critical = chi_square_critical_255(P_FAIL / 30.0);
    for subset in 1u32..(1 << n) {
        let members: Vec<usize> = (0..n).filter(|i| subset & (1 << i) != 0).collect();
        let masked_sum = ring_sum(members.iter().map(|&i| &masked[i]), len);
        let mut plain_sum = vec![0u64; len];
        for &i in &members {
            for (a, b) in plain_sum.iter_mut().zip(&encoded[i]) {
                *a = a.wrapping_add(*b);
            }
        }
        if members.len() == n {
            assert_eq!(masked_sum, plain_sum, "the full set must unmask exactly");
            continue;
        }
        let equal = masked_sum
            .iter()
            .zip(&plain_sum)
            .filter(|(a, b)| a == b)
            .count();
        assert_eq!(equal, 0, "subset {members:?}: {equal} coordinates unmasked");
        let residual: Vec<u64> = masked_sum
            .iter()
            .zip(&plain_sum)
            .map(|(a, b)| a.wrapping_sub(*b))
            .collect();
        let chi = byte_chi_square(&residual);
        assert!(
            chi < critical,
            "subset {members:?}: residual mask is not uniform (chi2 = {chi:.1})"
        );
        // Decoding the subset sum gives values nowhere near the subset's plaintext sum.
        let decoded = fp.decode_slice(&masked_sum);
        let close = decoded
            .iter()
            .enumerate()
            .filter(|&(j, d)| {
                let truth: f64 = members.iter().map(|&i| inputs[i][j]).sum();
                (d - truth).abs() < 1e3
            })
            .count();
        assert!(
            close < 5,
            "subset {members:?}: {close} decoded values near the truth"
        );
    }

    // The aggregator's state machine does not hand out partial sums either.
    let mut round = MaskedRound::new(spec.clone(), len, &policy).unwrap();
    for m in &masked[..n - 1] {
        round.accept(m).unwrap();
    }
    assert!(round.complete().is_err());
}

#[test]
fn different_rounds_and_sets_give_unrelated_masks() {
    // Site 0 masks an all-zero vector, so the masked vector *is* its combined pad.
    let policy = SecAggPolicy::default();
    let len = 4096;
    let mut a = federation(4, 6, policy);
    let spec_r1 = RoundSpec::new(STUDY, 1, site_ids(4)).unwrap();
    let spec_r2 = RoundSpec::new(STUDY, 2, site_ids(4)).unwrap();
    let pad_r1 = a[0].mask(&spec_r1, vec![0; len]).unwrap().values;
    let pad_r2 = a[0].mask(&spec_r2, vec![0; len]).unwrap().values;
    // Same keys, same round id, but a different participant set (fresh sessions so that the
    // round id is not refused as reused): the combined pad must differ too. (It also lacks the
    // site-03 pair, so this alone does not prove the per-pair seed is bound to the set; the unit
    // test `keys::round_seed_is_bound_to_round_study_set_and_keys` checks that.)
    let mut b = federation(4, 6, policy);
    let spec_r1_subset = RoundSpec::new(STUDY, 1, site_ids(3)).unwrap();
    let pad_r1_subset = b[0].mask(&spec_r1_subset, vec![0; len]).unwrap().values;
    // Same keys, same round, same set → identical pad (determinism; the pair seeds are reused
    // only for the same round).
    let mut c = federation(4, 6, policy);
    assert_eq!(c[0].mask(&spec_r1, vec![0; len]).unwrap().values, pad_r1);

    let critical = chi_square_critical_255(P_FAIL);
    for (name, other) in [("round 2", &pad_r2), ("subset", &pad_r1_subset)] {
        let equal = pad_r1.iter().zip(other).filter(|(x, y)| x == y).count();
        assert_eq!(equal, 0, "{name}: {equal} equal mask words");
        // If the pads were related (e.g. shifted or reused), their difference would be far from
        // uniform; a reused pad would give all zeros.
        let diff: Vec<u64> = pad_r1
            .iter()
            .zip(other)
            .map(|(x, y)| x.wrapping_sub(*y))
            .collect();
        let chi = byte_chi_square(&diff);
        assert!(
            chi < critical,
            "{name}: pad difference not uniform (chi2 = {chi:.1})"
        );
    }
    // Detector check: a reused pad gives a difference of all zeros, which fails badly.
    let zeros = vec![0u64; len];
    assert!(byte_chi_square(&zeros) > 100.0 * critical);
}
