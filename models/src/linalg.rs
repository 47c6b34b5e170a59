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

/// Low-rank factor `L` (`p × r`, row-major) of a positive semi-definite matrix given as its
/// packed upper triangle, with `A ≈ L Lᵀ`: Cholesky with diagonal pivoting (at each step the
/// largest remaining diagonal entry, the lowest index on ties), stopped when every remaining
/// diagonal entry is at most `rel_tol ×` the largest diagonal entry of `A`. Row `i` of `L`
/// belongs to row `i` of `A` (the pivoting only orders the columns of `L`).
///
/// Returns `None` when `A` is not within `rel_tol` of rank `max_rank` or less, or has a negative
/// diagonal entry. Every entry of `A − L Lᵀ` is at most `rel_tol · max_i A_ii` in magnitude (a
/// PSD remainder's entries are bounded by its diagonal).
///
/// Why: a site's x̃ᵀWx̃ sums over its own training rows, so its rank is at most the number of
/// those rows (about a dozen at a hospital of the published study, against p = 55 features);
/// this factor carries it in `p·r` numbers instead of `p(p+1)/2`. It is computed from the
/// matrix's values alone (a deterministic function of `A`), so it reveals nothing the matrix
/// does not — unlike the rows' own factor `x̃ᵀW^½`, which it never is.
pub fn low_rank_factor(
    packed: &[f64],
    p: usize,
    max_rank: usize,
    rel_tol: f64,
) -> Option<Vec<f64>> {
    if packed.len() != packed_len(p) {
        return None;
    }
    let max_rank = max_rank.min(p);
    let mut d: Vec<f64> = (0..p).map(|i| packed[packed_index(p, i, i)]).collect();
    if d.iter().any(|&x| x.is_nan() || x < 0.0) {
        return None;
    }
    let tol = rel_tol * d.iter().copied().fold(0.0f64, f64::max);
    // Working factor row by row (row i: its values at steps 0..max_rank, contiguous, so each
    // update is a dot product of two contiguous rows).
    let w = max_rank;
    let mut rows = vec![0.0; p * w];
    let mut done = vec![false; p];
    let mut pivots: Vec<usize> = Vec::with_capacity(max_rank);
    let mut lj: Vec<f64> = Vec::with_capacity(w);
    loop {
        let mut j = usize::MAX;
        let mut best = tol;
        for i in 0..p {
            if !done[i] && d[i] > best {
                best = d[i];
                j = i;
            }
        }
        if j == usize::MAX {
            break;
        }
        let r = pivots.len();
        if r == max_rank {
            return None;
        }
        let piv = d[j].sqrt();
        // Row j's first r values, copied (the other rows are written below).
        lj.clear();
        lj.extend_from_slice(&rows[j * w..j * w + r]);
        // Column j of A from the packed triangle: row j's tail and column j's head.
        let row_start = packed_index(p, j, j);
        for i in 0..p {
            if done[i] || i == j {
                continue;
            }
            let a_ij = if i > j {
                packed[row_start + (i - j)]
            } else {
                packed[packed_index(p, i, j)]
            };
            let li = &rows[i * w..i * w + r];
            let dot: f64 = li.iter().zip(&lj).map(|(a, b)| a * b).sum();
            let v = (a_ij - dot) / piv;
            rows[i * w + r] = v;
            d[i] -= v * v;
        }
        rows[j * w + r] = piv;
        done[j] = true;
        d[j] = 0.0;
        pivots.push(j);
    }
    let r = pivots.len();
    let mut l = Vec::with_capacity(p * r);
    for i in 0..p {
        l.extend_from_slice(&rows[i * w..i * w + r]);
    }
    Some(l)
}

/// Applies the Householder reflection I − 2vvᵀ/(vᵀv) to rows `t..` of column `col` of the
/// row-major matrix `a` with `width` columns (`vv` = vᵀv > 0).
fn reflect_column(v: &[f64], vv: f64, a: &mut [f64], width: usize, t: usize, col: usize) {
    let dot: f64 = v
        .iter()
        .enumerate()
        .map(|(i, vi)| vi * a[(t + i) * width + col])
        .sum();
    let f = 2.0 * dot / vv;
    for (i, vi) in v.iter().enumerate() {
        a[(t + i) * width + col] -= f * vi;
    }
}

/// A thin QR factorisation with column pivoting of an `n × m` matrix `A` (row-major):
/// `A ≈ Q·R` with `Q` (`n × k`, orthonormal columns) and `R` (`k × m`), `k` the numerical rank.
/// Returned as `(q, r, k)`, both row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PivotedQr {
    /// `Q`, `n × k`, row-major.
    pub q: Vec<f64>,
    /// `R`, `k × m`, row-major, in the columns' natural order (row `t` is zero at the columns
    /// pivoted before step `t` and positive at step `t`'s pivot).
    pub r: Vec<f64>,
    /// The rank `k`.
    pub k: usize,
}

/// Householder QR with column pivoting (the column with the largest residual norm first, the
/// lowest index on ties), stopped when every remaining column's residual norm is at most
/// `rel_tol ×` the largest column norm of `A`; each step's pivot is made positive.
///
/// Why pivoted, and positive: `R` is then the pivoted Cholesky factor of the Gram matrix `AᵀA`
/// (`RᵀR = AᵀA` up to the dropped remainder), determined by `AᵀA` alone — the residual norms
/// and inner products that choose the pivots and fill `R` are all entries of the Gram matrix.
/// Two row sets with the same Gram matrix give the same `R`; `R` does not carry the rows
/// themselves (`Q·R` does). Householder reflections instead of Cholesky on `AᵀA` keep the
/// accuracy of `A`'s own condition number rather than its square.
pub fn pivoted_qr(a: &[f64], n: usize, m: usize, rel_tol: f64) -> Result<PivotedQr> {
    if a.len() != n * m {
        return Err(ModelsError::Dimension {
            what: "QR input".into(),
            expected: n * m,
            got: a.len(),
        });
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err(ModelsError::Invalid(
            "QR of a matrix with a non-finite entry".into(),
        ));
    }
    let mut w = a.to_vec();
    let mut perm: Vec<usize> = (0..m).collect();
    let col_norm2 = |w: &[f64], from: usize, j: usize| -> f64 {
        (from..n).map(|i| w[i * m + j] * w[i * m + j]).sum()
    };
    let largest = (0..m).map(|j| col_norm2(&w, 0, j)).fold(0.0f64, f64::max);
    let tol2 = rel_tol * rel_tol * largest;
    let mut vs: Vec<Vec<f64>> = Vec::new();
    let mut signs: Vec<f64> = Vec::new();
    let steps = n.min(m);
    for t in 0..steps {
        // Pivot: the largest residual norm (recomputed: the matrices are a few dozen wide).
        let (mut piv, mut best) = (usize::MAX, tol2);
        for j in t..m {
            let s = col_norm2(&w, t, j);
            if s > best {
                best = s;
                piv = j;
            }
        }
        if piv == usize::MAX {
            break;
        }
        if piv != t {
            for i in 0..n {
                w.swap(i * m + t, i * m + piv);
            }
            perm.swap(t, piv);
        }
        let s = best.sqrt();
        let x0 = w[t * m + t];
        let alpha = if x0 >= 0.0 { -s } else { s };
        let mut v: Vec<f64> = (t..n).map(|i| w[i * m + t]).collect();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv > 0.0 {
            for j in t..m {
                reflect_column(&v, vv, &mut w, m, t, j);
            }
        }
        w[t * m + t] = alpha;
        for i in t + 1..n {
            w[i * m + t] = 0.0;
        }
        vs.push(v);
        signs.push(if alpha < 0.0 { -1.0 } else { 1.0 });
    }
    let k = vs.len();
    // Q = H_0 ⋯ H_{k−1} · [I_k; 0], applied from the last reflection back.
    let mut q = vec![0.0; n * k];
    for t in 0..k {
        q[t * k + t] = 1.0;
    }
    for t in (0..k).rev() {
        let v = &vs[t];
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        for c in 0..k {
            reflect_column(v, vv, &mut q, k, t, c);
        }
    }
    // Positive pivots: row t of R and column t of Q change sign together.
    let mut r = vec![0.0; k * m];
    for t in 0..k {
        let sg = signs[t];
        for j in t..m {
            r[t * m + perm[j]] = sg * w[t * m + j];
        }
        for i in 0..n {
            q[i * k + t] *= sg;
        }
    }
    Ok(PivotedQr { q, r, k })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random stream for the QR tests.
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn pivoted_qr_reconstructs_and_is_a_function_of_the_gram_matrix() {
        let mut s = 7;
        for &(n, m) in &[(6usize, 11usize), (12, 56), (9, 4)] {
            let a: Vec<f64> = (0..n * m).map(|_| lcg(&mut s)).collect();
            let f = pivoted_qr(&a, n, m, 1e-12).unwrap();
            assert_eq!(f.k, n.min(m));
            for i in 0..n {
                for j in 0..m {
                    let qr: f64 = (0..f.k).map(|t| f.q[i * f.k + t] * f.r[t * m + j]).sum();
                    assert!((qr - a[i * m + j]).abs() < 1e-13, "A = QR at ({i}, {j})");
                }
            }
            for a_ in 0..f.k {
                for b in 0..f.k {
                    let d: f64 = (0..n).map(|i| f.q[i * f.k + a_] * f.q[i * f.k + b]).sum();
                    let e = if a_ == b { 1.0 } else { 0.0 };
                    assert!((d - e).abs() < 1e-13, "QᵀQ = I at ({a_}, {b})");
                }
            }
            // The rows rotated (a Householder reflection of row space): same Gram matrix, so
            // the same R.
            let u: Vec<f64> = (0..n).map(|_| lcg(&mut s)).collect();
            let uu: f64 = u.iter().map(|x| x * x).sum();
            let mut b = a.clone();
            for j in 0..m {
                let dot: f64 = (0..n).map(|i| u[i] * a[i * m + j]).sum();
                for i in 0..n {
                    b[i * m + j] -= 2.0 * u[i] * dot / uu;
                }
            }
            let g = pivoted_qr(&b, n, m, 1e-12).unwrap();
            assert_eq!(g.k, f.k);
            for (x, y) in f.r.iter().zip(&g.r) {
                assert!(
                    (x - y).abs() < 1e-12,
                    "R depends on the rows, not only the Gram"
                );
            }
        }
    }

    #[test]
    fn pivoted_qr_stops_at_the_numerical_rank() {
        // Column 2 = column 0 + column 1, rows 4 = row 0 + row 1: rank 3 of a 5 × 4 matrix.
        let mut s = 3;
        let mut a = vec![0.0; 5 * 4];
        for i in 0..4 {
            for j in [0, 1, 3] {
                a[i * 4 + j] = lcg(&mut s);
            }
            a[i * 4 + 2] = a[i * 4] + a[i * 4 + 1];
        }
        for j in 0..4 {
            a[4 * 4 + j] = a[j] + a[4 + j];
        }
        let f = pivoted_qr(&a, 5, 4, 1e-12).unwrap();
        assert_eq!(f.k, 3);
        for i in 0..5 {
            for j in 0..4 {
                let qr: f64 = (0..3).map(|t| f.q[i * 3 + t] * f.r[t * 4 + j]).sum();
                assert!((qr - a[i * 4 + j]).abs() < 1e-13);
            }
        }
        assert!(pivoted_qr(&[1.0, f64::NAN], 1, 2, 1e-12).is_err());
        assert!(pivoted_qr(&[1.0], 1, 2, 1e-12).is_err());
    }

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

    #[test]
    fn low_rank_factor_reproduces_a_rank_deficient_gram_matrix() {
        // A = Xᵀ diag(w) X for 3 rows of 6 features: rank 3.
        let x = ndarray::array![
            [1.0, -0.5, 2.0, 0.0, 0.3, -1.2],
            [0.2, 1.5, -0.7, 2.2, 0.0, 0.4],
            [-1.1, 0.6, 0.9, -0.3, 1.7, 0.8]
        ];
        let w = ndarray::array![0.2, 0.9, 0.45];
        let a = x.t().dot(&(&x * &w.view().insert_axis(ndarray::Axis(1))));
        let packed = pack_upper(&a);
        assert!(
            low_rank_factor(&packed, 6, 2, 1e-12).is_none(),
            "rank 3 is not ≤ 2"
        );
        let l = low_rank_factor(&packed, 6, 3, 1e-12).expect("rank 3");
        assert_eq!(l.len(), 6 * 3);
        let l = Array2::from_shape_vec((6, 3), l).unwrap();
        let back = l.dot(&l.t());
        for i in 0..6 {
            for j in 0..6 {
                assert!((back[[i, j]] - a[[i, j]]).abs() < 1e-13, "({i},{j})");
            }
        }
        let l2 = low_rank_factor(&pack_upper(&a), 6, 6, 1e-12).unwrap();
        assert_eq!(l2.len(), 18, "stops at the numerical rank");
        // No column of the factor is a (scaled) row of the data: it is the matrix's own
        // pivoted Cholesky factor, not x̃ᵀW^½.
        for k in 0..3 {
            let col = l.column(k);
            for i in 0..3 {
                let row = x.row(i);
                let s = col.dot(&row) / row.dot(&row);
                let resid: f64 = col
                    .iter()
                    .zip(row.iter())
                    .map(|(c, r)| (c - s * r).abs())
                    .sum();
                assert!(resid > 1e-6, "factor column {k} is row {i} scaled");
            }
        }
        assert!(low_rank_factor(&[1.0, 0.0, -1.0], 2, 2, 1e-12).is_none());
    }
}
