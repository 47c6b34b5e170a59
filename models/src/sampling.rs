//! Site-side randomness: stratified fold assignment and bootstrap multiplicities, both drawn by
//! the site for its own rows from (seed, …, site id), so no row ever leaves and every site and the
//! pooled reference agree on the draw.
//!
//! Generator: ChaCha8 (rand_chacha 0.3) seeded with the 32 bytes
//! `seed ‖ purpose/replicate ‖ site id ‖ class`, each a little-endian u64. The draw for a site
//! depends only on its own id, so adding or removing another site does not change it.
//!
//! Bootstrap scheme (documented choice): **per-site, per-class stratified resampling**. A site
//! with n₀ controls and n₁ cases draws n₀ controls and n₁ cases with replacement from its own
//! rows; the weight of a row is its multiplicity. Site sizes and class balance per site are kept
//! in every replicate (the pooled bootstrap it corresponds to is stratified by site × outcome).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

const PURPOSE_FOLDS: u64 = 0x464f_4c44_5300_0000; // "FOLDS"
const PURPOSE_BOOT: u64 = 0x424f_4f54_0000_0000; // "BOOT"

fn rng(seed: u64, purpose: u64, site_id: u64, class: u64) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&purpose.to_le_bytes());
    s[16..24].copy_from_slice(&site_id.to_le_bytes());
    s[24..].copy_from_slice(&class.to_le_bytes());
    ChaCha8Rng::from_seed(s)
}

fn class_rows(y: &[f64]) -> [Vec<usize>; 2] {
    let mut c = [Vec::new(), Vec::new()];
    for (i, &v) in y.iter().enumerate() {
        c[usize::from(v > 0.5)].push(i);
    }
    c
}

/// Stratified K-fold assignment of a site's rows (fold ids 0..nfolds). Each class's rows are
/// shuffled (Fisher-Yates) and dealt round-robin; the deal of class 1 continues where class 0
/// stopped, so per-site fold sizes differ by at most one.
pub fn assign_stratified_folds(y: &[f64], nfolds: u32, seed: u64, site_id: u64) -> Vec<u32> {
    let mut folds = vec![0u32; y.len()];
    let k = nfolds.max(1) as usize;
    let mut next = 0usize;
    for (class, rows) in class_rows(y).into_iter().enumerate() {
        let mut rows = rows;
        let mut r = rng(seed, PURPOSE_FOLDS, site_id, class as u64);
        for i in (1..rows.len()).rev() {
            let j = r.gen_range(0..=i);
            rows.swap(i, j);
        }
        for i in rows {
            folds[i] = (next % k) as u32;
            next += 1;
        }
    }
    folds
}

/// Bootstrap multiplicities of a site's rows for `replicate` (per-site, per-class stratified; see
/// the module doc). The weights sum to the site's row count.
pub fn bootstrap_weights(y: &[f64], seed: u64, replicate: u32, site_id: u64) -> Vec<f64> {
    let mut w = vec![0.0; y.len()];
    for (class, rows) in class_rows(y).into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let mut r = rng(
            seed,
            PURPOSE_BOOT ^ u64::from(replicate),
            site_id,
            class as u64,
        );
        for _ in 0..rows.len() {
            w[rows[r.gen_range(0..rows.len())]] += 1.0;
        }
    }
    w
}

/// A reference to one fold of one fold scheme held by the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldRef {
    /// Index into [`SiteData::fold_schemes`].
    pub scheme: u32,
    /// Fold id within the scheme.
    pub fold: u32,
}

/// How a site derives per-row weights for one fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WeightSpec {
    /// Rows of this fold are outside the analysis altogether (e.g. the outer test fold of a
    /// nested CV): weight 0 for training *and* held-out, and not eligible for the bootstrap draw.
    #[serde(default)]
    pub outer: Option<FoldRef>,
    /// Rows of this fold get weight 0 (they are the fit's held-out rows).
    pub exclude: Option<FoldRef>,
    /// Multiply by the bootstrap multiplicity of `(seed, replicate)`, drawn over the rows that
    /// `outer` leaves in.
    pub bootstrap: Option<(u64, u32)>,
}

/// A site's rows for the regression steps: features (n × p), 0/1 outcome and fold schemes.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteData {
    /// The site's id (SiteId); seeds the site's bootstrap draws.
    pub site_id: u64,
    /// Features, rows = patients.
    pub x: ndarray::Array2<f64>,
    /// Outcome 0/1.
    pub y: Vec<f64>,
    /// Fold id per row, one vector per scheme (e.g. per CV repeat).
    pub fold_schemes: Vec<Vec<u32>>,
}

impl SiteData {
    /// (training weights, held-out weights) for a weight spec. Held-out weights are non-zero only
    /// for rows of the excluded fold (times their bootstrap multiplicity).
    pub fn weights(&self, spec: &WeightSpec) -> crate::Result<(Vec<f64>, Vec<f64>)> {
        let n = self.y.len();
        let in_fold = |f: FoldRef| -> crate::Result<Vec<bool>> {
            let folds = self.fold_schemes.get(f.scheme as usize).ok_or_else(|| {
                crate::ModelsError::Invalid(format!(
                    "fold scheme {} requested but the site holds {} scheme(s)",
                    f.scheme,
                    self.fold_schemes.len()
                ))
            })?;
            if folds.len() != n {
                return Err(crate::ModelsError::Dimension {
                    what: "fold ids".into(),
                    expected: n,
                    got: folds.len(),
                });
            }
            Ok(folds.iter().map(|&k| k == f.fold).collect())
        };
        let eligible: Vec<bool> = match spec.outer {
            Some(f) => in_fold(f)?.into_iter().map(|o| !o).collect(),
            None => vec![true; n],
        };
        let mut base: Vec<f64> = eligible.iter().map(|&e| f64::from(u8::from(e))).collect();
        if let Some((seed, b)) = spec.bootstrap {
            let rows: Vec<usize> = (0..n).filter(|&i| eligible[i]).collect();
            let ys: Vec<f64> = rows.iter().map(|&i| self.y[i]).collect();
            let w = bootstrap_weights(&ys, seed, b, self.site_id);
            for (k, &i) in rows.iter().enumerate() {
                base[i] = w[k];
            }
        }
        match spec.exclude {
            None => Ok((base, vec![0.0; n])),
            Some(f) => {
                let held_rows = in_fold(f)?;
                let mut train = base.clone();
                let mut held = vec![0.0; n];
                for i in 0..n {
                    if held_rows[i] {
                        train[i] = 0.0;
                        held[i] = base[i];
                    }
                }
                Ok((train, held))
            }
        }
    }

    /// Checks shapes, finiteness and 0/1 outcomes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.x.nrows() != self.y.len() {
            return Err(crate::ModelsError::Dimension {
                what: "outcome".into(),
                expected: self.x.nrows(),
                got: self.y.len(),
            });
        }
        crate::standardize::check_finite(self.x.view(), "features")?;
        if let Some(i) = self.y.iter().position(|&v| v != 0.0 && v != 1.0) {
            return Err(crate::ModelsError::Invalid(format!(
                "outcome of row {i} is {} (must be 0 or 1)",
                self.y[i]
            )));
        }
        Ok(())
    }
}

/// A site's answer when its disclosure guard refuses a fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Fit refused.
    pub fit_id: u32,
    /// Parameters (features + intercept).
    pub params: usize,
    /// Rows with non-zero weight.
    pub rows: usize,
    /// The site's limit.
    pub max_params_per_row: f64,
}

impl Refusal {
    /// The aggregator's error for this refusal from site number `site` (site order).
    pub fn into_error(self, site: usize) -> crate::ModelsError {
        crate::ModelsError::DisclosureRefused {
            site,
            fit_id: self.fit_id,
            params: self.params,
            rows: self.rows,
            max_params_per_row: self.max_params_per_row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_balanced_and_deterministic() {
        let y: Vec<f64> = (0..23).map(|i| f64::from(i % 3 == 0)).collect();
        let f = assign_stratified_folds(&y, 5, 42, 3);
        assert_eq!(f, assign_stratified_folds(&y, 5, 42, 3));
        assert_ne!(f, assign_stratified_folds(&y, 5, 42, 4));
        let mut sizes = [0; 5];
        for &k in &f {
            sizes[k as usize] += 1;
        }
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        for class in [0.0, 1.0] {
            let mut c = [0; 5];
            for (i, &k) in f.iter().enumerate() {
                if y[i] == class {
                    c[k as usize] += 1;
                }
            }
            assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn outer_fold_rows_are_out_of_everything() {
        let y: Vec<f64> = (0..20).map(|i| f64::from(i % 2 == 0)).collect();
        let d = SiteData {
            site_id: 2,
            x: ndarray::Array2::zeros((20, 1)),
            fold_schemes: vec![
                assign_stratified_folds(&y, 5, 1, 2),
                assign_stratified_folds(&y, 4, 9, 2),
            ],
            y,
        };
        let outer = FoldRef { scheme: 0, fold: 3 };
        let spec = WeightSpec {
            outer: Some(outer),
            exclude: Some(FoldRef { scheme: 1, fold: 0 }),
            bootstrap: Some((4, 7)),
        };
        let (v, h) = d.weights(&spec).unwrap();
        let mut total = 0.0;
        for i in 0..20 {
            if d.fold_schemes[0][i] == 3 {
                assert_eq!((v[i], h[i]), (0.0, 0.0));
            }
            if d.fold_schemes[1][i] == 0 {
                assert_eq!(v[i], 0.0);
            }
            total += v[i] + h[i];
        }
        // the bootstrap draw covers exactly the 16 rows left in by the outer fold
        assert_eq!(total, 16.0);
    }

    #[test]
    fn bootstrap_keeps_site_and_class_sizes() {
        let y: Vec<f64> = (0..17).map(|i| f64::from(i % 4 == 0)).collect();
        let w = bootstrap_weights(&y, 9, 2, 1);
        assert_eq!(w, bootstrap_weights(&y, 9, 2, 1));
        assert_ne!(w, bootstrap_weights(&y, 9, 3, 1));
        let s1: f64 = w.iter().zip(&y).map(|(w, y)| w * y).sum();
        assert_eq!(w.iter().sum::<f64>(), 17.0);
        assert_eq!(s1, y.iter().sum::<f64>());
    }
}
