//! Small dense linear algebra (Cholesky, packed symmetric storage) for the p ≤ a few hundred
//! systems of ComBat's normal equations, IRLS information matrices and LASSO Hessians.
//!
//! Kept in-crate (pure Rust, no LAPACK) because the systems are tiny and exactness/determinism
//! matter more than speed: the same operations in the same order give bit-identical results on
//! every machine.

use crate::error::{ModelsError, Result};
use ndarray::{Array1, Array2, ArrayView1};

/// Number of entries of a packed upper triangle of a `p × p` symmetric matrix.
pub fn packed_len(p: usize) -> usize {
    p * (p + 1) / 2
}

/// Index of `(i, j)` (any order) in packed upper-triangular row-major storage.
#[inline]
pub fn packed_index(p: usize, i: usize, j: usize) -> usize {
    let (i, j) = if i <= j { (i, j) } else { (j, i) };
    // rows 0..i hold p, p-1, ..., p-i+1 entries: i·p − i(i−1)/2 in total
    i * p - i * i.saturating_sub(1) / 2 + (j - i)
}

/// Packs the upper triangle (row-major) of a symmetric matrix.
pub fn pack_upper(a: &Array2<f64>) -> Vec<f64> {
    let p = a.nrows();
    let mut v = Vec::with_capacity(packed_len(p));
    for i in 0..p {
        for j in i..p {
            v.push(a[[i, j]]);
        }
    }
    v
}

/// Unpacks a packed upper triangle into a full symmetric matrix.
pub fn unpack_upper(v: &[f64], p: usize) -> Result<Array2<f64>> {
    if v.len() != packed_len(p) {
        return Err(ModelsError::Dimension {
            what: "packed symmetric matrix".into(),
            expected: packed_len(p),
            got: v.len(),
        });
    }
    let mut a = Array2::zeros((p, p));
    let mut k = 0;
    for i in 0..p {
        for j in i..p {
            a[[i, j]] = v[k];
            a[[j, i]] = v[k];
            k += 1;
        }
    }
    Ok(a)
}

/// Cholesky factor `L` (lower triangular, `A = L Lᵀ`) of a symmetric positive-definite matrix.
///
/// Fails with [`ModelsError::Singular`] when a pivot is not above `1e-12 ×` the largest
/// diagonal entry (numerically rank-deficient design).
pub fn cholesky(a: &Array2<f64>, context: &str) -> Result<Array2<f64>> {
    let p = a.nrows();
    let max_diag = (0..p).map(|i| a[[i, i]].abs()).fold(0.0, f64::max);
    let floor = 1e-12 * max_diag.max(f64::MIN_POSITIVE);
    let mut l = Array2::<f64>::zeros((p, p));
    for j in 0..p {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if d.is_nan() || d <= floor {
            return Err(ModelsError::Singular {
                context: context.to_string(),
                pivot: j,
                value: d,
            });
        }
        let d = d.sqrt();
        l[[j, j]] = d;
        for i in (j + 1)..p {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = s / d;
        }
    }
    Ok(l)
}

/// Solves `L Lᵀ x = b` for one right-hand side.
pub fn chol_solve_vec(l: &Array2<f64>, b: ArrayView1<f64>) -> Array1<f64> {
    let p = l.nrows();
    let mut y = b.to_owned();
    for i in 0..p {
        let mut s = y[i];
        for k in 0..i {
            s -= l[[i, k]] * y[k];
        }
        y[i] = s / l[[i, i]];
    }
    for i in (0..p).rev() {
        let mut s = y[i];
        for k in (i + 1)..p {
            s -= l[[k, i]] * y[k];
        }
        y[i] = s / l[[i, i]];
    }
    y
}

/// Solves `L Lᵀ X = B` column by column.
pub fn chol_solve_mat(l: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let mut x = Array2::zeros(b.raw_dim());
    for c in 0..b.ncols() {
        let col = chol_solve_vec(l, b.column(c));
        x.column_mut(c).assign(&col);
    }
    x
}

/// Inverse of `L Lᵀ`.
pub fn chol_inverse(l: &Array2<f64>) -> Array2<f64> {
    let p = l.nrows();
    chol_solve_mat(l, &Array2::eye(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let a = ndarray::array![[4.0, 1.0, 2.0], [1.0, 5.0, 3.0], [2.0, 3.0, 6.0]];
        let v = pack_upper(&a);
        assert_eq!(v, vec![4.0, 1.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(unpack_upper(&v, 3).unwrap(), a);
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(v[packed_index(3, i, j)], a[[i, j]]);
            }
        }
    }

    #[test]
    fn solve_and_inverse() {
        let a = ndarray::array![[4.0, 1.0, 2.0], [1.0, 5.0, 3.0], [2.0, 3.0, 6.0]];
        let l = cholesky(&a, "test").unwrap();
        let inv = chol_inverse(&l);
        let id = a.dot(&inv);
        for i in 0..3 {
            for j in 0..3 {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((id[[i, j]] - e).abs() < 1e-14);
            }
        }
        let singular = ndarray::array![[1.0, 1.0], [1.0, 1.0]];
        assert!(matches!(
            cholesky(&singular, "s"),
            Err(ModelsError::Singular { pivot: 1, .. })
        ));
    }
}
