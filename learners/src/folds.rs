//! Deterministic stratified K-fold assignment, per site, for outer and inner folds.
//!
//! Every site assigns its own patients; nobody needs anyone else's labels. A *global* fold `f`
//! is the union over sites of each site's fold `f`.
//!
//! Scheme (`stratified_folds(labels, k, seed)`):
//! 1. draw from the ChaCha8 stream of `seed` (see [`crate::rng`]): first the offset
//!    `o = below(k)`, then a Fisher–Yates shuffle of the positive rows (in row order before the
//!    shuffle), then one of the negative rows;
//! 2. deal the shuffled positives round-robin to folds `o, o+1, …` (mod k) and continue with the
//!    shuffled negatives from where the positives stopped.
//!
//! So within a site every fold's size and every fold's count of each class differ by at most one,
//! and the random offset keeps the sites' leftover rows from all piling into fold 0, which makes
//! the global folds close to stratified as well.
//!
//! Seeds: outer folds use `derive_seed(seed, [OUTER_FOLDS, repeat, str_tag(site)])`; inner folds of
//! outer fold `f` use `derive_seed(seed, [INNER_FOLDS, repeat, f, str_tag(site)])` and are
//! assigned over the outer training rows taken in ascending row order.

use crate::error::{LearnerError, Result};
use crate::rng::{self, tag};

/// Stratified K-fold assignment: one fold index in `0..k` per row (see the module doc).
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Result<Vec<u32>> {
    if k < 2 {
        return Err(LearnerError::Folds(format!(
            "need at least 2 folds, got {k}"
        )));
    }
    let mut r = rng::stream(seed);
    let offset = rng::below(&mut r, k as u64) as usize;
    let mut pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let mut neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    rng::shuffle(&mut r, &mut pos);
    rng::shuffle(&mut r, &mut neg);
    let mut fold = vec![0u32; labels.len()];
    for (j, &row) in pos.iter().chain(neg.iter()).enumerate() {
        fold[row] = ((offset + j) % k) as u32;
    }
    Ok(fold)
}

/// Outer folds of one site for one repeat.
pub fn outer_folds(
    seed: u64,
    repeat: u32,
    site: &str,
    labels: &[bool],
    k: usize,
) -> Result<Vec<u32>> {
    stratified_folds(
        labels,
        k,
        rng::derive_seed(
            seed,
            &[tag::OUTER_FOLDS, u64::from(repeat), rng::str_tag(site)],
        ),
    )
}

/// Inner folds of one site inside outer fold `outer_fold` of `repeat`. `train_labels` are the
/// labels of the outer *training* rows in ascending row order; the result is aligned with them.
pub fn inner_folds(
    seed: u64,
    repeat: u32,
    outer_fold: u32,
    site: &str,
    train_labels: &[bool],
    k: usize,
) -> Result<Vec<u32>> {
    stratified_folds(
        train_labels,
        k,
        rng::derive_seed(
            seed,
            &[
                tag::INNER_FOLDS,
                u64::from(repeat),
                u64::from(outer_fold),
                rng::str_tag(site),
            ],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(folds: &[u32], labels: &[bool], k: usize) -> (Vec<usize>, Vec<usize>) {
        let mut p = vec![0; k];
        let mut n = vec![0; k];
        for (f, l) in folds.iter().zip(labels) {
            if *l {
                p[*f as usize] += 1
            } else {
                n[*f as usize] += 1
            }
        }
        (p, n)
    }

    #[test]
    fn stratified_balanced_and_deterministic() {
        for n in [1usize, 3, 7, 13, 20, 37, 60] {
            for npos in [0, 1, n / 3, n / 2, n] {
                let labels: Vec<bool> = (0..n).map(|i| i < npos).collect();
                for k in [2usize, 3, 5] {
                    let f = stratified_folds(&labels, k, 42).unwrap();
                    assert_eq!(f, stratified_folds(&labels, k, 42).unwrap());
                    let (p, q) = counts(&f, &labels, k);
                    let spread = |v: &[usize]| v.iter().max().unwrap() - v.iter().min().unwrap();
                    assert!(spread(&p) <= 1, "positives {p:?}");
                    assert!(spread(&q) <= 1, "negatives {q:?}");
                    let sizes: Vec<usize> = (0..k).map(|j| p[j] + q[j]).collect();
                    assert!(spread(&sizes) <= 1, "sizes {sizes:?}");
                }
            }
        }
    }

    #[test]
    fn seeds_repeats_and_sites_change_the_assignment() {
        let labels: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
        let a = outer_folds(1, 0, "S01", &labels, 5).unwrap();
        assert_eq!(a, outer_folds(1, 0, "S01", &labels, 5).unwrap());
        assert_ne!(a, outer_folds(1, 1, "S01", &labels, 5).unwrap());
        assert_ne!(a, outer_folds(1, 0, "S02", &labels, 5).unwrap());
        assert_ne!(a, outer_folds(2, 0, "S01", &labels, 5).unwrap());
        let inner = inner_folds(1, 0, 2, "S01", &labels[..30], 5).unwrap();
        assert_eq!(inner.len(), 30);
        assert!(stratified_folds(&labels, 1, 0).is_err());
    }

    #[test]
    fn union_of_site_folds_is_nearly_stratified() {
        // 7 sites of 14-15 patients, half responders: the global folds stay within a few rows of
        // perfect balance thanks to the random per-site offsets.
        let mut gp = [0usize; 5];
        let mut gn = [0usize; 5];
        for s in 0..7 {
            let labels: Vec<bool> = (0..(14 + s % 2)).map(|i| i % 2 == 0).collect();
            let f = outer_folds(9, 0, &format!("S{s:02}"), &labels, 5).unwrap();
            let (p, n) = counts(&f, &labels, 5);
            for j in 0..5 {
                gp[j] += p[j];
                gn[j] += n[j];
            }
        }
        let total_p: usize = gp.iter().sum();
        for j in 0..5 {
            assert!((gp[j] as f64 - total_p as f64 / 5.0).abs() <= 3.0, "{gp:?}");
            assert!(gn[j] >= 6, "{gn:?}");
        }
    }
}
