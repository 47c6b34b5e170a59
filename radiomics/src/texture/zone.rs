//! Features shared by the run-length-like matrices (GLRLM, GLSZM, GLDZM, NGLDM).
//!
//! All four are grey level (`i`) × `j` count matrices — `j` is the run length, zone size, zone
//! distance or dependence count — and IBSI defines their features with the same formulas
//! (IBSI 1, sections 3.7–3.11). With counts `m_ij`, `N_s = Σ m_ij`, marginals `m_i. = Σ_j m_ij` and
//! `m_.j = Σ_i m_ij`, and `N_v` the number of voxels (summed over merged matrices):
//!
//! | field | GLRLM / GLSZM / GLDZM / NGLDM | formula |
//! |---|---|---|
//! | `small_j` | SRE / SZE / SDE / LDE | `Σ_j m_.j / j² / N_s` |
//! | `large_j` | LRE / LZE / LDE / HDE | `Σ_j j² m_.j / N_s` |
//! | `low_i` | LGRE / LGZE / LGZE / LGCE | `Σ_i m_i. / i² / N_s` |
//! | `high_i` | HGRE / HGZE / HGZE / HGCE | `Σ_i i² m_i. / N_s` |
//! | `small_j_low_i` | SRLGE … | `Σ m_ij / (i² j²) / N_s` |
//! | `small_j_high_i` | SRHGE … | `Σ i² m_ij / j² / N_s` |
//! | `large_j_low_i` | LRLGE … | `Σ j² m_ij / i² / N_s` |
//! | `large_j_high_i` | LRHGE … | `Σ i² j² m_ij / N_s` |
//! | `glnu`, `glnu_norm` | GLNU | `Σ_i m_i.² / N_s`, `/ N_s²` |
//! | `jnu`, `jnu_norm` | RLNU / ZSNU / ZDNU / DCNU | `Σ_j m_.j² / N_s`, `/ N_s²` |
//! | `percentage` | run / zone / dependence count percentage | `N_s / N_v` |
//! | `gl_var` | grey level variance | `Σ (i − μ_i)² p_ij`, `p_ij = m_ij / N_s` |
//! | `j_var` | run length / zone size / distance / dependence variance | `Σ (j − μ_j)² p_ij` |
//! | `entropy` | run / zone / dependence entropy | `−Σ p_ij log2 p_ij` |
//! | `energy` | NGLDM dependence count energy | `Σ p_ij²` |
//!
//! `i` is the grey level value (not its compact index). An empty matrix gives NaN everywhere.

use std::collections::BTreeMap;

/// Values of the run-length-like features of one matrix (see the module table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneFeatures {
    pub small_j: f64,
    pub large_j: f64,
    pub low_i: f64,
    pub high_i: f64,
    pub small_j_low_i: f64,
    pub small_j_high_i: f64,
    pub large_j_low_i: f64,
    pub large_j_high_i: f64,
    pub glnu: f64,
    pub glnu_norm: f64,
    pub jnu: f64,
    pub jnu_norm: f64,
    pub percentage: f64,
    pub gl_var: f64,
    pub j_var: f64,
    pub entropy: f64,
    pub energy: f64,
}

impl ZoneFeatures {
    /// The 16 features in IBSI order (GLRLM/GLSZM/GLDZM order; NGLDM appends `energy`).
    pub fn ibsi16(&self) -> [f64; 16] {
        [
            self.small_j,
            self.large_j,
            self.low_i,
            self.high_i,
            self.small_j_low_i,
            self.small_j_high_i,
            self.large_j_low_i,
            self.large_j_high_i,
            self.glnu,
            self.glnu_norm,
            self.jnu,
            self.jnu_norm,
            self.percentage,
            self.gl_var,
            self.j_var,
            self.entropy,
        ]
    }

    fn nan() -> Self {
        let n = f64::NAN;
        Self {
            small_j: n,
            large_j: n,
            low_i: n,
            high_i: n,
            small_j_low_i: n,
            small_j_high_i: n,
            large_j_low_i: n,
            large_j_high_i: n,
            glnu: n,
            glnu_norm: n,
            jnu: n,
            jnu_norm: n,
            percentage: n,
            gl_var: n,
            j_var: n,
            entropy: n,
            energy: n,
        }
    }
}

/// Compute the features from the non-zero cells `(level index, j, count)` (`j ≥ 1`), the grey level
/// value of each level index, and the voxel count `n_v`.
pub(crate) fn zone_features(
    cells: impl Iterator<Item = (usize, usize, f64)> + Clone,
    values: &[f64],
    n_v: f64,
) -> ZoneFeatures {
    let mut n_s = 0.0;
    let mut row = vec![0.0; values.len()];
    // Ordered: the non-uniformity sum must not depend on a hash seed.
    let mut col: BTreeMap<usize, f64> = BTreeMap::new();
    let mut f = ZoneFeatures::nan();
    let (mut sj, mut lj, mut sjli, mut sjhi, mut ljli, mut ljhi) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut mu_i, mut mu_j) = (0.0, 0.0);
    for (k, j, c) in cells.clone() {
        let i = values[k];
        let j = j as f64;
        let (i2, j2) = (i * i, j * j);
        n_s += c;
        row[k] += c;
        *col.entry(j as usize).or_insert(0.0) += c;
        sj += c / j2;
        lj += c * j2;
        sjli += c / (i2 * j2);
        sjhi += c * i2 / j2;
        ljli += c * j2 / i2;
        ljhi += c * i2 * j2;
        mu_i += c * i;
        mu_j += c * j;
    }
    if n_s == 0.0 {
        return f;
    }
    mu_i /= n_s;
    mu_j /= n_s;
    let (mut var_i, mut var_j, mut entropy, mut energy) = (0.0, 0.0, 0.0, 0.0);
    for (k, j, c) in cells {
        let p = c / n_s;
        var_i += (values[k] - mu_i).powi(2) * p;
        var_j += (j as f64 - mu_j).powi(2) * p;
        entropy -= p * p.log2();
        energy += p * p;
    }
    let (mut low_i, mut high_i, mut glnu) = (0.0, 0.0, 0.0);
    for (k, &r) in row.iter().enumerate() {
        let i2 = values[k] * values[k];
        low_i += r / i2;
        high_i += r * i2;
        glnu += r * r;
    }
    let jnu: f64 = col.values().map(|&c| c * c).sum();
    f.small_j = sj / n_s;
    f.large_j = lj / n_s;
    f.low_i = low_i / n_s;
    f.high_i = high_i / n_s;
    f.small_j_low_i = sjli / n_s;
    f.small_j_high_i = sjhi / n_s;
    f.large_j_low_i = ljli / n_s;
    f.large_j_high_i = ljhi / n_s;
    f.glnu = glnu / n_s;
    f.glnu_norm = glnu / (n_s * n_s);
    f.jnu = jnu / n_s;
    f.jnu_norm = jnu / (n_s * n_s);
    f.percentage = n_s / n_v;
    f.gl_var = var_i;
    f.j_var = var_j;
    f.entropy = entropy;
    f.energy = energy;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_matrix() {
        // Levels 1 and 2; cells (i=1, j=1) x2 and (i=2, j=3) x1; 5 voxels.
        let values = [1.0, 2.0];
        let cells = [(0usize, 1usize, 2.0), (1, 3, 1.0)];
        let f = zone_features(cells.iter().copied(), &values, 5.0);
        assert!((f.small_j - (2.0 + 1.0 / 9.0) / 3.0).abs() < 1e-12);
        assert!((f.large_j - (2.0 + 9.0) / 3.0).abs() < 1e-12);
        assert!((f.high_i - (2.0 + 4.0) / 3.0).abs() < 1e-12);
        assert!((f.large_j_high_i - (2.0 + 36.0) / 3.0).abs() < 1e-12);
        assert!((f.glnu - 5.0 / 3.0).abs() < 1e-12);
        assert!((f.percentage - 0.6).abs() < 1e-12);
        let entropy = -(2.0 / 3.0f64 * (2.0 / 3.0f64).log2() + 1.0 / 3.0 * (1.0 / 3.0f64).log2());
        assert!((f.entropy - entropy).abs() < 1e-12);
        let f = zone_features(std::iter::empty(), &values, 5.0);
        assert!(f.entropy.is_nan());
    }
}
