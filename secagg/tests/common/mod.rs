//! Shared test helpers: a federation of deterministic site sessions with exchanged keys.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secagg::{KeyAnnouncement, SecAggPolicy, SiteSecret, SiteSession};

pub const STUDY: &str = "study-secagg-test";

/// Site ids `site-00`, `site-01`, ... (zero-padded so that byte order = numeric order).
pub fn site_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("site-{i:02}")).collect()
}

/// `n` sessions with secrets drawn from `seed`, all peer keys relayed and pinned.
pub fn federation(n: usize, seed: u64, policy: SecAggPolicy) -> Vec<SiteSession> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sessions: Vec<SiteSession> = site_ids(n)
        .into_iter()
        .map(|id| SiteSession::new(STUDY, id, SiteSecret::generate(&mut rng), policy).unwrap())
        .collect();
    let anns: Vec<KeyAnnouncement> = sessions.iter().map(|s| s.announcement()).collect();
    for s in &mut sessions {
        s.accept_peer_keys(&anns).unwrap();
    }
    sessions
}

/// A random vector mixing large (|x| ≤ 1e3) and small (|x| ≤ 1e-3) magnitudes.
pub fn random_values(rng: &mut impl Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| {
            let scale = if i % 3 == 0 { 1e-3 } else { 1e3 };
            rng.gen_range(-1.0..1.0) * scale
        })
        .collect()
}

/// Pearson chi-square statistic of the byte histogram of `words` against uniform over 256 bins.
pub fn byte_chi_square(words: &[u64]) -> f64 {
    let mut counts = [0u64; 256];
    for w in words {
        for b in w.to_le_bytes() {
            counts[b as usize] += 1;
        }
    }
    let expected = (words.len() * 8) as f64 / 256.0;
    counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum()
}

/// Upper critical value of chi-square with 255 degrees of freedom at tail probability `p`.
pub fn chi_square_critical_255(p: f64) -> f64 {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    ChiSquared::new(255.0).unwrap().inverse_cdf(1.0 - p)
}
