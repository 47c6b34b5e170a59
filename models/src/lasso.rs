//! Federated LASSO logistic regression, equal to glmnet (binomial, α = 1) computed on the pooled
//! rows, with cross-validated λ and bootstrap selection frequencies.
//!
//! # Conventions (glmnet / cv.glmnet, DESIGN §7)
//! - Objective per fit: (1/V)Σ v_i[log(1 + e^η_i) − y_iη_i] + λ‖β‖₁, V = Σ v_i, intercept
//!   unpenalised, on features standardised **by the fit's own weighted mean and 1/V SD**
//!   (glmnet `standardize = TRUE`); coefficients reported on both scales
//!   (β_orig = β/sd, β0_orig = β0 − Σ β_j·mean_j/sd_j). A feature with SD 0 in a fit is excluded
//!   (coefficient 0), as glmnet does with constant columns.
//! - λ path: λ_max = max_j |x̃_jᵀ v(y − ȳ)|/V; λ_k = λ_max·ratio^(k/(nlambda−1)), ratio 1e-4 if
//!   V ≥ p else 1e-2; warm starts along the path. The full-data path stops early with glmnet's
//!   rule (after ≥ `mnlam` = 5 λ's: deviance ratio > `devmax` = 0.999 or its gain < `fdev` = 1e-5);
//!   CV fold fits use the full fit's λ values and do not stop early (user-supplied λ in glmnet).
//! - Outer loop: IRLS / proximal Newton as glmnet's `lognet`: at the current (β0, β) the
//!   quadratic model of the loss is built from the weighted sums below, coordinate descent with
//!   covariance updates minimises model + λ‖β‖₁ to convergence (finished exactly on the active
//!   set once the sign pattern is stable, see `cd_solve`), and the IRLS loop stops when
//!   max_j (H_jj/V)·Δβ_j² (intercept included) < `irls_tol` = 1e-10 (glmnet's criterion with a
//!   tighter threshold). Two deliberate differences, neither of which changes the solutions
//!   (checked against glmnet, by KKT and against scikit-learn): (1) when λ_k converges, λ_{k+1}'s
//!   first step is taken from the same quadratic model instead of a new expansion at λ_k's
//!   solution (that solution is evaluated exactly, without Hessian, in the next round) — one
//!   round trip less per λ; (2) if the true objective at a new iterate exceeds the previous one
//!   the step is halved (a safeguard glmnet lacks; it does not trigger on well-posed data).
//! - Screening: an IRLS request asks only for the Hessian columns of glmnet's strong-rule set
//!   (plus non-zero and ever-violating coordinates); screened-out coordinates are KKT-checked
//!   after the step and, if violated, added and the step repeated from the same point.
//! - CV: deviance −2[y log p + (1−y) log(1−p)], p clamped to [1e-5, 1 − 1e-5], weighted by the
//!   held-out rows' weights; cvm = fold-weight-weighted mean of fold means; cvsd =
//!   sqrt(Σ_f W_f (m_f − cvm)² / Σ W_f / (K − 1)); λ.min = largest λ attaining min cvm;
//!   λ.1se = largest λ with cvm ≤ cvm[λ.min] + cvsd[λ.min]. A fold fit that failed to converge at
//!   some λ reuses its last converged solution for the rest (cv.glmnet fills the same way).
//!
//! # Federated protocol
//! Every fit (full data, every CV fold, every bootstrap replicate, …) is identified by a `fit_id`
//! and a [`WeightSpec`] that the site turns into row weights itself (fold exclusion, bootstrap
//! multiplicities drawn at the site). One site call answers **all** current fits
//! ([`site_irls_sums`]); [`LassoDriver`] advances them in lock-step, so the number of round trips
//! is 1 (standardisation moments) + the IRLS rounds of the slowest fit (+1 final evaluation), not
//! a function of the number of fits. What a site returns per fit:
//! - round 1 ([`RequestKind::Moments`]): weighted (Σv, mean, M2) per feature, Σv, Σvy;
//! - IRLS rounds ([`RequestKind::Irls`]), with x̃ the fit's standardised features,
//!   p = σ(β0 + x̃β), w = v·p(1−p), r = v·(y − p): Σv ℓ (loss), Σr, x̃ᵀr, Σw, x̃ᵀw, x̃ᵀWx̃
//!   (packed upper triangle, or the columns of the screened set; single precision, see
//!   [`IrlsSums::hess`]) and, for the fit's held-out rows, Σh and Σh·deviance. These are the
//!   minimal sufficient statistics of the quadratic model; the standardisation is done at the
//!   site with the fit's merged mean/SD so the aggregator never subtracts large raw sums.
//! - With [`LassoConfig::hessian_basis`] (the pipeline), x̃ᵀWx̃ and x̃ᵀw come instead as the k × k
//!   `QᵀWQ` of the site's rows in their fixed basis `[1 | x̃₀] = Q·R` (`R` sent once per site);
//!   the aggregator maps them to each fit's standardisation ([`IrlsSums::hess_basis`]).
//!
//! Two implementations of the sums: the site's ([`site_irls_sums`]: blocked matrix products of
//! the standardised rows, the symmetric x̃ᵀWx̃ by block rows from the diagonal block rightwards)
//! and the pooled reference's ([`lasso_pooled`]: a plain loop over the rows, f64 throughout).
//! The oracle tests compare the two.

use crate::error::{ModelsError, Result};
use crate::linalg::{chol_solve_vec, cholesky, packed_len, unpack_upper};
use crate::logistic::{sigmoid, softplus};
use crate::sampling::{FoldRef, Refusal, SiteData, WeightSpec};
use crate::standardize::WeightedMoments;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------

/// What a site computes for one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestKind {
    /// Standardisation round: weighted moments per feature, Σv and Σvy.
    Moments,
    /// IRLS sums at (β0, β) (standardised scale) under the fit's standardisation.
    Irls {
        /// Fit's feature means.
        mean: Vec<f64>,
        /// Fit's feature SDs (1/V); 0 marks an excluded (constant) feature.
        sd: Vec<f64>,
        /// Intercept.
        beta0: f64,
        /// Coefficients (standardised scale).
        beta: Vec<f64>,
        /// Whether x̃ᵀWx̃ is needed (false for a pure evaluation of a final solution).
        hessian: bool,
        /// Columns S of x̃ᵀWx̃ to return (screened set); None = the whole matrix (packed).
        #[serde(default)]
        cols: Option<Vec<u32>>,
        /// Only the scalars are needed (Σv, the loss, Σr, Σw and the held-out weight and
        /// deviance): x̃ᵀr and x̃ᵀw are left empty. The evaluation of a converged solution
        /// (its training loss and CV deviance) reads nothing else, and the two vectors were
        /// nine tenths of its reply.
        #[serde(default)]
        eval_only: bool,
        /// x̃ᵀWx̃ in the row basis of fit `basis` ([`LassoConfig::hessian_basis`]): instead of
        /// the matrix (or its factor) the site returns `M = QᵀWQ` ([`IrlsSums::hess_basis`]),
        /// where `Q·R` is the pivoted QR of its LASSO rows `[1 | x̃₀]` standardised by fit
        /// `basis`'s kept standardisation; `cols` is then ignored (the aggregator rebuilds
        /// every column). Only with a Hessian, for a site that keeps standardisations.
        #[serde(default)]
        basis: Option<u32>,
        /// Also return the basis's `R` ([`IrlsSums::basis_r`]), once per study for the
        /// aggregator to keep.
        #[serde(default)]
        send_basis: bool,
    },
}

/// One fit's request (identical for every site).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitRequest {
    /// Fit id.
    pub fit_id: u32,
    /// How the site weights its rows.
    pub weights: WeightSpec,
    /// What to compute.
    pub kind: RequestKind,
}

/// Round-1 sums of one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentSums {
    /// Fit id.
    pub fit_id: u32,
    /// Σv.
    pub sum_w: f64,
    /// Σv·y.
    pub sum_wy: f64,
    /// Weighted moments per feature.
    pub features: Vec<WeightedMoments>,
}

/// IRLS sums of one fit at the requested point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IrlsSums {
    /// Fit id.
    pub fit_id: u32,
    /// Σv.
    pub sum_w: f64,
    /// Σv·[log(1+e^η) − yη].
    pub loss: f64,
    /// Σr, r = v(y − p).
    pub r0: f64,
    /// x̃ᵀr.
    pub rx: Vec<f64>,
    /// Σw, w = v·p(1 − p).
    pub w0: f64,
    /// x̃ᵀw.
    pub wx: Vec<f64>,
    /// x̃ᵀWx̃: packed upper triangle when all columns were requested, else the requested
    /// columns S as a p × |S| row-major block (empty when no Hessian was requested).
    ///
    /// Sites round it to single precision (every value is an f32; the wire carries 4 bytes per
    /// entry, half the traffic of a round). The Hessian only shapes the Newton direction: the
    /// solution is where the gradient terms (x̃ᵀr, Σr, kept in f64) satisfy the KKT conditions,
    /// so a relative error of 6e-8 in x̃ᵀWx̃ changes the iterates by far less than the IRLS
    /// tolerance and the solutions not at all at the tested precision (inexact Newton). The
    /// pooled reference keeps f64 throughout.
    ///
    /// Serialised (JSON for persistence, postcard for result digests) as 4-byte floats when
    /// every value is one, which the sites' values are: see [`compact_hess`].
    #[serde(with = "compact_hess")]
    pub hess: Vec<f64>,
    /// x̃ᵀWx̃ as a low-rank factor instead (then `hess` is empty): `L` (p × r, row-major) with
    /// x̃ᵀWx̃ = L·Lᵀ, the matrix's own pivoted Cholesky factor
    /// ([`crate::linalg::low_rank_factor`]), rounded to single precision like `hess`. A site
    /// sends it when it is smaller than the requested form: its x̃ᵀWx̃ has rank at most its
    /// number of training rows r, so p·r numbers instead of p(p+1)/2 (or p·|S|). It is a
    /// function of the matrix alone, so it discloses exactly what the matrix does; it is not
    /// additive across sites (the aggregator multiplies it out), so masked rounds use
    /// [`IrlsSums::expand_factor`] first.
    #[serde(default, with = "compact_hess")]
    pub hess_factor: Vec<f64>,
    /// x̃ᵀWx̃ in the site's row basis (a request with `basis`; then `hess`, `hess_factor` and
    /// `wx` are empty): the packed upper triangle of the k × k matrix `M = QᵀWQ` (f64), where
    /// `[1 | x̃₀] = Q·R` over the site's LASSO rows (see [`RowBasis`]). With `x̃ = x̃₀`'s affine
    /// image under the fit's standardisation `[1 | x̃] = [1 | x̃₀]·T`, the fit's whole
    /// `[1 | x̃]ᵀW[1 | x̃] = TᵀRᵀ·M·R·T`, so the aggregator, which keeps each site's `R`, rebuilds
    /// x̃ᵀWx̃ and x̃ᵀw from k(k+1)/2 numbers instead of p·k. k ≤ the site's LASSO rows.
    #[serde(default)]
    pub hess_basis: Vec<f64>,
    /// The site's basis `R` (k × (p + 1), row-major), when the request asked for it: the
    /// pivoted Cholesky factor of the Gram matrix `[1 | x̃₀]ᵀ[1 | x̃₀]` of its LASSO rows
    /// ([`crate::linalg::pivoted_qr`]), a function of that matrix alone.
    #[serde(default)]
    pub basis_r: Vec<f64>,
    /// Σh over held-out rows.
    pub heldout_w: f64,
    /// Σh·deviance over held-out rows.
    pub heldout_dev: f64,
}

/// Serde form of [`IrlsSums::hess`]: `{"f32": [..]}` when every value is exactly an f32 (the
/// sites round x̃ᵀWx̃ to single precision), else the plain list of f64 (the pooled reference, and
/// what older states hold; both forms are read). The values read back are bit for bit the
/// values written. Why: the aggregator hashes and persists every round's results, and these
/// matrices are most of their bytes; written as f64 they took twice the bytes they carry.
pub mod compact_hess {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The list as f32s, written straight from the f64s (no copy).
    struct AsF32<'a>(&'a [f64]);

    impl Serialize for AsF32<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|&x| x as f32))
        }
    }

    #[derive(Serialize)]
    struct Single<'a> {
        f32: AsF32<'a>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Double(Vec<f64>),
        Single { f32: Vec<f32> },
    }

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        // NaN never compares equal, so a list holding one stays f64.
        let single = !v.is_empty() && v.iter().all(|&x| f64::from(x as f32) == x);
        if single {
            Single { f32: AsF32(v) }.serialize(s)
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Double(v) => v,
            Stored::Single { f32 } => f32.into_iter().map(f64::from).collect(),
        })
    }
}

/// Entry (a, b) of L·Lᵀ for a row-major p × r factor L: rows a and b of L, dotted in order.
fn factor_entry(l: &[f64], r: usize, a: usize, b: usize) -> f64 {
    let (la, lb) = (&l[a * r..(a + 1) * r], &l[b * r..(b + 1) * r]);
    la.iter().zip(lb).map(|(x, y)| x * y).sum()
}

impl IrlsSums {
    /// Replaces a low-rank factor ([`IrlsSums::hess_factor`]) by the additive form the request
    /// asked for: the packed upper triangle of L·Lᵀ (`cols = None`) or its p × |S| block of
    /// columns `cols`. Values stay in f64 (the product of single-precision factors). No-op
    /// without a factor. For the sums that must add up across sites (secure aggregation).
    pub fn expand_factor(&mut self, p: usize, cols: Option<&[u32]>) -> Result<()> {
        if self.hess_factor.is_empty() {
            return Ok(());
        }
        let l = &self.hess_factor;
        if p == 0 || !l.len().is_multiple_of(p) {
            return Err(ModelsError::Dimension {
                what: "x̃ᵀWx̃ factor".into(),
                expected: p,
                got: l.len(),
            });
        }
        let r = l.len() / p;
        let dot = |a: usize, b: usize| factor_entry(l, r, a, b);
        self.hess = match cols {
            None => {
                let mut v = Vec::with_capacity(packed_len(p));
                for a in 0..p {
                    for b in a..p {
                        v.push(dot(a, b));
                    }
                }
                v
            }
            Some(c) => {
                let mut v = Vec::with_capacity(p * c.len());
                for a in 0..p {
                    for &b in c {
                        v.push(dot(a, b as usize));
                    }
                }
                v
            }
        };
        self.hess_factor.clear();
        Ok(())
    }
}

/// A site's answer for one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FitSums {
    /// Round-1 moments.
    Moments(MomentSums),
    /// IRLS sums.
    Irls(IrlsSums),
    /// Disclosure guard refused.
    Refused(Refusal),
}

/// glmnet/cv.glmnet clamp of predicted probabilities in the CV deviance.
pub const PROB_CLAMP: f64 = 1e-5;

/// Binomial deviance of one observation with p clamped to [1e-5, 1 − 1e-5] (cv.glmnet).
pub fn binomial_deviance(y: f64, p: f64) -> f64 {
    let p = p.clamp(PROB_CLAMP, 1.0 - PROB_CLAMP);
    -2.0 * (y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// SITE HALF: answers every request for this site's rows, in request order. A request needing
/// x̃ᵀWx̃ for more than `max_params_per_row` parameters per non-zero-weight row is answered with
/// [`FitSums::Refused`] (see [`crate::disclosure`]). The guard counts the whole model, p features
/// and the intercept, whatever columns of x̃ᵀWx̃ the request names: the aggregator learns the
/// full quadratic model of the loss over the rounds, so the column subset does not lower what a
/// site discloses.
///
/// The sums are products of the standardised rows (see [`site_kernel`]): the same quantities as
/// the row-by-row reference that [`lasso_pooled`] uses, computed as blocked matrix products.
pub fn site_irls_sums(
    data: &SiteData,
    requests: &[FitRequest],
    max_params_per_row: f64,
) -> Result<Vec<FitSums>> {
    sums_with(
        data,
        requests,
        max_params_per_row,
        |_| None,
        &mut BasisCache::default(),
    )
}

/// [`site_irls_sums`] for a driver with [`LassoConfig::standardisation_once`]: a request that
/// carries its fit's standardisation is answered with it and the site keeps it in `kept`; a
/// request without one is answered with the kept one (an error names the fit when the site
/// has none: the aggregator sent a reference to a standardisation this site never received).
/// Returns the sums and the ids of the fits whose kept standardisation is new or changed (the
/// caller persists those, so that a restarted site still holds what the aggregator will not
/// send again).
pub fn site_irls_sums_keeping(
    data: &SiteData,
    requests: &[FitRequest],
    max_params_per_row: f64,
    kept: &mut KeptStandardisations,
) -> Result<(Vec<FitSums>, Vec<u32>)> {
    site_irls_sums_keeping_cached(
        data,
        requests,
        max_params_per_row,
        kept,
        &mut BasisCache::default(),
    )
}

/// Keeps the standardisations the requests carry; returns the fits whose kept one is new or
/// changed. A request referring to one the site does not hold is an error naming the fit.
fn keep_standardisations(
    requests: &[FitRequest],
    kept: &mut KeptStandardisations,
) -> Result<Vec<u32>> {
    let mut changed = Vec::new();
    for req in requests {
        if let RequestKind::Irls { mean, sd, .. } = &req.kind {
            if mean.is_empty() && sd.is_empty() {
                if !kept.0.contains_key(&req.fit_id) {
                    return Err(ModelsError::Invalid(format!(
                        "LASSO fit {} refers to a standardisation this site never received (its \
                         kept state is missing or from another run); restart the site agent from \
                         its study memory or resubmit the study",
                        req.fit_id
                    )));
                }
            } else {
                let new = KeptStandardisation {
                    mean: mean.clone(),
                    sd: sd.clone(),
                };
                if kept.0.get(&req.fit_id) != Some(&new) {
                    kept.0.insert(req.fit_id, new);
                    changed.push(req.fit_id);
                }
            }
        }
    }
    Ok(changed)
}

/// [`site_irls_sums_keeping`] with the row basis kept in `cache` between calls (see
/// [`LassoConfig::hessian_basis`]); for a site that answers many rounds over the same rows.
/// The cache belongs to `data`: pass it only with the rows it was filled from (it checks their
/// shape, the basis fit, the outer fold and the standardisation, not every value).
pub fn site_irls_sums_keeping_cached(
    data: &SiteData,
    requests: &[FitRequest],
    max_params_per_row: f64,
    kept: &mut KeptStandardisations,
    cache: &mut BasisCache,
) -> Result<(Vec<FitSums>, Vec<u32>)> {
    let changed = keep_standardisations(requests, kept)?;
    let sums = sums_with(
        data,
        requests,
        max_params_per_row,
        |id| kept.0.get(&id),
        cache,
    )?;
    Ok((sums, changed))
}

/// A site's row basis kept between calls over the same rows (derived state, never persisted).
#[derive(Debug, Clone, Default)]
pub struct BasisCache(Option<RowBasis>);

/// One fit's standardisation as a site keeps it between rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptStandardisation {
    /// The fit's feature means.
    pub mean: Vec<f64>,
    /// The fit's feature SDs (0 = excluded feature).
    pub sd: Vec<f64>,
}

/// The standardisations a site keeps, by fit id (see [`site_irls_sums_keeping`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptStandardisations(pub std::collections::BTreeMap<u32, KeptStandardisation>);

fn sums_with<'a>(
    data: &SiteData,
    requests: &[FitRequest],
    max_params_per_row: f64,
    kept: impl Fn(u32) -> Option<&'a KeptStandardisation>,
    cache: &mut BasisCache,
) -> Result<Vec<FitSums>> {
    data.validate()?;
    let mut scratch = Scratch::default();
    // The row basis of these requests (every sub-fit of a LASSO study names the same one),
    // rebuilt only when its fit, outer fold or standardisation differ from the cached one's.
    let row_basis = &mut cache.0;
    requests
        .iter()
        .map(|req| {
            let (v, h) = data.weights(&req.weights)?;
            match &req.kind {
                RequestKind::Moments => Ok(moment_sums(data.x.view(), &data.y, &v, req.fit_id)),
                RequestKind::Irls { basis, hessian, .. } => {
                    let rb = match basis {
                        Some(b) if *hessian => {
                            let key = (*b, req.weights.outer, data.x.dim());
                            let std = kept(*b);
                            if row_basis
                                .as_ref()
                                .is_none_or(|x| x.key != key || Some(&x.std) != std)
                            {
                                *row_basis = Some(RowBasis::new(data, *b, req.weights.outer, std)?);
                            }
                            row_basis.as_ref()
                        }
                        _ => None,
                    };
                    site_kernel(
                        data.x.view(),
                        &data.y,
                        &v,
                        &h,
                        req,
                        kept(req.fit_id),
                        rb,
                        max_params_per_row,
                        &mut scratch,
                    )
                }
            }
        })
        .collect()
}

/// The factor a site standardises a feature by, (x − mean)·inv_sd: 1/sd, or 0 for a feature
/// the fit excludes (SD 0). The row basis and the kernel apply the same rule.
fn inv_sd_of(sd: f64) -> f64 {
    if sd > 0.0 { 1.0 / sd } else { 0.0 }
}

/// Relative residual norm at which a site's basis QR stops ([`crate::linalg::pivoted_qr`]): a
/// remainder below 1e-12 of the largest column is round-off of rows that are linearly
/// dependent, far under what changes a Newton direction.
const BASIS_REL_TOL: f64 = 1e-12;

/// Whether a site with a basis of rank `k` answers in it: when `M` (k(k+1)/2 doubles) is
/// smaller than the matrix it replaces (p(p+1)/2 or p·k singles) and x̃ᵀw (p doubles). A site
/// with more rows than features (k = p + 1) answers plainly; the aggregator takes both forms.
fn basis_is_smaller(k: usize, p: usize) -> bool {
    2 * packed_len(k) < packed_len(p).min(p * k) + 2 * p
}

/// A site's LASSO rows in a fixed basis ([`LassoConfig::hessian_basis`]): `[1 | x̃₀] = Q·R` over
/// the rows the study uses (weight > 0 with no fold excluded and no bootstrap), x̃₀ standardised
/// by the basis fit's kept standardisation. Every sub-fit's rows are among them and every
/// sub-fit's standardisation is an affine map of x̃₀'s, so x̃ᵀWx̃ = TᵀRᵀ(QᵀWQ)RT for all of them;
/// only the small `QᵀWQ` changes from one request to the next.
#[derive(Debug, Clone)]
pub struct RowBasis {
    /// Basis fit id, outer fold and the rows' shape (with `std`, the cache key).
    key: (u32, Option<FoldRef>, (usize, usize)),
    /// The basis fit's standardisation it was built with.
    std: KeptStandardisation,
    /// Row index → its row of `q` (`usize::MAX` outside the basis).
    pos: Vec<usize>,
    /// `Q` (basis rows × k, row-major).
    q: Vec<f64>,
    /// `R` (k × (p + 1), row-major).
    r: Vec<f64>,
    k: usize,
}

impl RowBasis {
    fn new(
        data: &SiteData,
        basis: u32,
        outer: Option<FoldRef>,
        std: Option<&KeptStandardisation>,
    ) -> Result<RowBasis> {
        let std = std.ok_or_else(|| {
            ModelsError::Invalid(format!(
                "LASSO basis fit {basis}: this site keeps no standardisation for it (its kept \
                 state is missing or from another run); restart the site agent from its study \
                 memory or resubmit the study"
            ))
        })?;
        let (n, p) = data.x.dim();
        if std.mean.len() != p || std.sd.len() != p {
            return Err(ModelsError::Dimension {
                what: format!("LASSO basis fit {basis}'s standardisation"),
                expected: p,
                got: std.mean.len().min(std.sd.len()),
            });
        }
        let (v, _) = data.weights(&WeightSpec {
            outer,
            exclude: None,
            bootstrap: None,
        })?;
        let inv_sd: Vec<f64> = std.sd.iter().map(|&d| inv_sd_of(d)).collect();
        let mut pos = vec![usize::MAX; n];
        let mut a = Vec::with_capacity(n * (p + 1));
        let mut rows = 0;
        for i in 0..n {
            if v[i] > 0.0 {
                pos[i] = rows;
                rows += 1;
                a.push(1.0);
                a.extend((0..p).map(|j| (data.x[[i, j]] - std.mean[j]) * inv_sd[j]));
            }
        }
        let f = crate::linalg::pivoted_qr(&a, rows, p + 1, BASIS_REL_TOL)?;
        Ok(RowBasis {
            key: (basis, outer, data.x.dim()),
            std: std.clone(),
            pos,
            q: f.q,
            r: f.r,
            k: f.k,
        })
    }
}

/// Round-1 sums: weighted moments per feature (Welford, row order), Σv, Σvy.
fn moment_sums(x: ArrayView2<f64>, yv: &[f64], v: &[f64], fit_id: u32) -> FitSums {
    let (n, p) = x.dim();
    let mut feats = vec![WeightedMoments::default(); p];
    let (mut sw, mut swy) = (0.0, 0.0);
    for i in 0..n {
        if v[i] == 0.0 {
            continue;
        }
        sw += v[i];
        swy += v[i] * yv[i];
        for (j, f) in feats.iter_mut().enumerate() {
            f.push(x[[i, j]], v[i]);
        }
    }
    FitSums::Moments(MomentSums {
        fit_id,
        sum_w: sw,
        sum_wy: swy,
        features: feats,
    })
}

/// Checks an IRLS request against the data's width; returns its fields.
#[allow(clippy::type_complexity)]
fn irls_fields<'a>(
    req: &'a FitRequest,
    p: usize,
    kept: Option<&'a KeptStandardisation>,
) -> Result<(
    &'a [f64],
    &'a [f64],
    f64,
    &'a [f64],
    bool,
    Option<&'a [u32]>,
)> {
    let RequestKind::Irls {
        mean,
        sd,
        beta0,
        beta,
        hessian,
        cols,
        ..
    } = &req.kind
    else {
        return Err(ModelsError::Invalid("not an IRLS request".into()));
    };
    // A request without the fit's standardisation refers to the one an earlier request of the
    // same fit carried ([`LassoConfig::standardisation_once`]).
    let (mean, sd) = match kept {
        Some(k) if mean.is_empty() && sd.is_empty() => (&k.mean, &k.sd),
        _ => (mean, sd),
    };
    if mean.len() != p || sd.len() != p || beta.len() != p {
        return Err(ModelsError::Dimension {
            what: "LASSO request standardisation/coefficients".into(),
            expected: p,
            got: beta.len().min(mean.len()).min(sd.len()),
        });
    }
    if let Some(c) = cols
        && c.iter().any(|&j| j as usize >= p)
    {
        return Err(ModelsError::Invalid(format!(
            "Hessian column out of range (p = {p})"
        )));
    }
    Ok((mean, sd, *beta0, beta, *hessian, cols.as_deref()))
}

/// Whether an IRLS request asks for the scalars only (`eval_only`, which excludes a Hessian).
fn evaluation_only(req: &FitRequest) -> Result<bool> {
    match &req.kind {
        RequestKind::Irls {
            eval_only: true,
            hessian: true,
            ..
        } => Err(ModelsError::Invalid(format!(
            "LASSO fit {} asks for x̃ᵀWx̃ in an evaluation-only request",
            req.fit_id
        ))),
        RequestKind::Irls { eval_only, .. } => Ok(*eval_only),
        RequestKind::Moments => Ok(false),
    }
}

/// The disclosure guard's answer for a request over rows with training weights `v`.
fn refusal(req_fit: u32, p: usize, v: &[f64], max_params_per_row: f64) -> Option<FitSums> {
    let rows = v.iter().filter(|&&w| w > 0.0).count();
    (!crate::cross_product_allowed(p + 1, rows, max_params_per_row)).then(|| {
        FitSums::Refused(Refusal {
            fit_id: req_fit,
            params: p + 1,
            rows,
            max_params_per_row,
        })
    })
}

/// Buffers reused across one site call's requests.
#[derive(Debug, Default)]
struct Scratch {
    rows: Vec<usize>,
    inv_sd: Vec<f64>,
    /// Standardised rows x̃ (training rows first), row-major m × p.
    a: Vec<f64>,
    /// Right-hand factor of the products: [w·x̃_S | r | w], row-major.
    c: Vec<f64>,
    /// Product x̃ᵀ·c (one block at a time).
    g: Vec<f64>,
    /// x̃β per row.
    eta: Vec<f64>,
    /// (r, w) per training row.
    rw: Vec<(f64, f64)>,
    /// Requested Hessian columns.
    sel: Vec<usize>,
    /// The whole x̃ᵀWx̃ (packed), before it is sent as is, as a column block or as its factor.
    /// Every entry is written before it is read, so it is never cleared between requests.
    hess: Vec<f64>,
}

/// Width of the column blocks of the symmetric product: x̃ᵀWx̃ is computed block row by block
/// row, each block row only from its diagonal block rightwards (the upper triangle plus the
/// small lower parts of the diagonal blocks: ~57 % of the full product's work at p = 56).
const SYM_BLOCK: usize = 8;

/// Relative remainder at which a site's x̃ᵀWx̃ counts as exactly low-rank
/// ([`crate::linalg::low_rank_factor`]): every entry of the dropped remainder is below 1e-11 of
/// the largest diagonal entry, far under the single-precision rounding (6e-8) the wire applies.
const FACTOR_REL_TOL: f64 = 1e-11;

/// SITE KERNEL for one IRLS request. With x̃ the rows standardised by the fit's mean and SD
/// (x − mean)·(1/sd) (0 for an SD-0 feature), p = σ(β0 + x̃β), w = v·p(1 − p), r = v·(y − p):
/// the training rows' x̃ᵀr and x̃ᵀw and x̃ᵀWx̃ (its packed upper triangle, or the p × |S| block of
/// the named columns) come from matrix products [`ndarray::linalg::general_mat_mul`] of x̃
/// with [w·x̃ | r | w]; the scalars and the held-out deviance from one pass over the rows.
/// Rows with neither training nor held-out weight are skipped.
// The rows, their weights, the request and its kept standardisation are separate borrows of
// different owners; bundling them in a struct would only move the list.
#[allow(clippy::too_many_arguments)]
fn site_kernel(
    x: ArrayView2<f64>,
    yv: &[f64],
    v: &[f64],
    h: &[f64],
    req: &FitRequest,
    kept: Option<&KeptStandardisation>,
    basis: Option<&RowBasis>,
    max_params_per_row: f64,
    sc: &mut Scratch,
) -> Result<FitSums> {
    use ndarray::linalg::general_mat_mul;
    use ndarray::{ArrayViewMut2, Axis, Slice};
    let (n, p) = x.dim();
    let (mean, sd, beta0, beta, hessian, cols) = irls_fields(req, p, kept)?;
    // x̃ᵀWx̃ itself (packed, a column block or its factor), unless it goes in the row basis.
    let in_basis = basis.filter(|b| hessian && basis_is_smaller(b.k, p));
    let direct = hessian && in_basis.is_none();
    if hessian && let Some(r) = refusal(req.fit_id, p, v, max_params_per_row) {
        return Ok(r);
    }
    // Rows: training rows (v > 0) first, then rows that are only held out.
    sc.rows.clear();
    sc.rows.extend((0..n).filter(|&i| v[i] > 0.0));
    let mt = sc.rows.len();
    sc.rows
        .extend((0..n).filter(|&i| v[i] == 0.0 && h[i] > 0.0));
    let m = sc.rows.len();
    sc.inv_sd.clear();
    sc.inv_sd.extend(sd.iter().map(|&d| inv_sd_of(d)));
    sc.a.clear();
    sc.a.resize(m * p, 0.0);
    let inv_sd = &sc.inv_sd[..p];
    let (mean, beta) = (&mean[..p], &beta[..p]);
    for (dst, &i) in sc.a.chunks_exact_mut(p).zip(&sc.rows) {
        let row = x.row(i);
        match row.as_slice() {
            Some(src) => {
                let src = &src[..p];
                for j in 0..p {
                    dst[j] = (src[j] - mean[j]) * inv_sd[j];
                }
            }
            None => {
                for j in 0..p {
                    dst[j] = (row[j] - mean[j]) * inv_sd[j];
                }
            }
        }
    }
    let a = ArrayView2::from_shape((m, p), &sc.a[..])
        .map_err(|e| ModelsError::Invalid(format!("LASSO kernel shape: {e}")))?;
    sc.eta.clear();
    sc.eta.resize(m, 0.0);
    ndarray::linalg::general_mat_vec_mul(
        1.0,
        &a,
        &ndarray::ArrayView1::from(beta),
        0.0,
        &mut ndarray::ArrayViewMut1::from(&mut sc.eta[..]),
    );
    let eta = &sc.eta;
    let mut out = IrlsSums {
        fit_id: req.fit_id,
        sum_w: 0.0,
        loss: 0.0,
        r0: 0.0,
        rx: vec![0.0; p],
        w0: 0.0,
        wx: vec![0.0; p],
        hess: Vec::new(),
        hess_factor: Vec::new(),
        hess_basis: Vec::new(),
        basis_r: Vec::new(),
        heldout_w: 0.0,
        heldout_dev: 0.0,
    };
    // Per-row scalars; r and w are kept for the products.
    let rw = &mut sc.rw;
    rw.clear();
    for (k, &i) in sc.rows.iter().enumerate() {
        let e = beta0 + eta[k];
        // σ(η) and log(1 + e^η) from one exponential, e^−|η| (bit for bit what
        // `sigmoid` and `softplus` compute, each with its own).
        let t = (-e.abs()).exp();
        let pr = if e >= 0.0 {
            1.0 / (1.0 + t)
        } else {
            t / (1.0 + t)
        };
        let y = yv[i];
        if h[i] > 0.0 {
            out.heldout_w += h[i];
            out.heldout_dev += h[i] * binomial_deviance(y, pr);
        }
        if k < mt {
            let vi = v[i];
            out.sum_w += vi;
            out.loss += vi * (e.max(0.0) + t.ln_1p() - y * e);
            let r = vi * (y - pr);
            let w = vi * pr * (1.0 - pr);
            out.r0 += r;
            out.w0 += w;
            rw.push((r, w));
        }
    }
    if evaluation_only(req)? {
        out.rx = Vec::new();
        out.wx = Vec::new();
        return Ok(FitSums::Irls(out));
    }
    let at = a.slice_axis(Axis(0), Slice::from(..mt)).reversed_axes();
    // c = [w·x̃_S | r | w] for the requested columns S (none without Hessian, all for a full one).
    // The whole matrix is computed when it was asked for, and also for a column block wider
    // than the rank bound mt: its low-rank factor (p·mt values at most) is then the smaller
    // answer.
    let full = direct && cols.is_none_or(|c| c.len() > mt);
    let sel = &mut sc.sel;
    sel.clear();
    match (direct, cols) {
        (false, _) => {}
        (true, _) if full => sel.extend(0..p),
        (true, None) => unreachable!("a whole-matrix request is always full"),
        (true, Some(c)) => sel.extend(c.iter().map(|&j| j as usize)),
    }
    let q = sel.len() + 2;
    sc.c.clear();
    sc.c.resize(mt * q, 0.0);
    let ns = sel.len();
    for ((dst, row), &(r, w)) in
        sc.c.chunks_exact_mut(q)
            .zip(sc.a.chunks_exact(p))
            .zip(&sc.rw)
    {
        if ns == p {
            for j in 0..p {
                dst[j] = w * row[j];
            }
        } else {
            for (d, &j) in dst.iter_mut().zip(&sc.sel) {
                *d = w * row[j];
            }
        }
        dst[ns] = r;
        dst[ns + 1] = w;
    }
    let c = ArrayView2::from_shape((mt, q), &sc.c[..])
        .map_err(|e| ModelsError::Invalid(format!("LASSO kernel shape: {e}")))?;
    match (direct, cols) {
        (true, _) if full => {
            // Block rows [j0, j1) of x̃ᵀ[Wx̃ | r | w], from column j0 on.
            sc.hess.resize(packed_len(p), 0.0);
            for j0 in (0..p).step_by(SYM_BLOCK) {
                let j1 = (j0 + SYM_BLOCK).min(p);
                let (rows, width) = (j1 - j0, q - j0);
                sc.g.clear();
                sc.g.resize(rows * width, 0.0);
                let mut g = ArrayViewMut2::from_shape((rows, width), &mut sc.g[..])
                    .map_err(|e| ModelsError::Invalid(format!("LASSO kernel shape: {e}")))?;
                general_mat_mul(
                    1.0,
                    &at.slice_axis(Axis(0), Slice::from(j0..j1)),
                    &c.slice_axis(Axis(1), Slice::from(j0..)),
                    0.0,
                    &mut g,
                );
                for a_ in j0..j1 {
                    let gr = g.row(a_ - j0);
                    let start = crate::linalg::packed_index(p, a_, a_);
                    for (t, b) in (a_..p).enumerate() {
                        sc.hess[start + t] = gr[b - j0];
                    }
                    out.rx[a_] = gr[p - j0];
                    out.wx[a_] = gr[p + 1 - j0];
                }
            }
            let asked = cols.map_or(packed_len(p), |c| p * c.len());
            let whole = &sc.hess[..packed_len(p)];
            match crate::linalg::low_rank_factor(whole, p, mt, FACTOR_REL_TOL) {
                Some(l) if !l.is_empty() && l.len() < asked => out.hess_factor = l,
                _ => match cols {
                    // The block of the requested columns, from the whole matrix.
                    Some(c) => {
                        out.hess.reserve(p * c.len());
                        for j in 0..p {
                            out.hess
                                .extend(c.iter().map(|&b| {
                                    whole[crate::linalg::packed_index(p, j, b as usize)]
                                }));
                        }
                    }
                    None => out.hess = whole.to_vec(),
                },
            }
        }
        _ => {
            sc.g.clear();
            sc.g.resize(p * q, 0.0);
            let mut g = ArrayViewMut2::from_shape((p, q), &mut sc.g[..])
                .map_err(|e| ModelsError::Invalid(format!("LASSO kernel shape: {e}")))?;
            general_mat_mul(1.0, &at, &c, 0.0, &mut g);
            if direct {
                out.hess = Vec::with_capacity(p * ns);
                for j in 0..p {
                    out.hess.extend_from_slice(&sc.g[j * q..j * q + ns]);
                }
            }
            for j in 0..p {
                out.rx[j] = sc.g[j * q + ns];
                out.wx[j] = sc.g[j * q + ns + 1];
            }
        }
    }
    if let Some(b) = in_basis {
        // M = QᵀWQ over the training rows (x̃ᵀw comes back with it, through R).
        let k = b.k;
        let mut m = vec![0.0; packed_len(k)];
        for (&i, &(_, w)) in sc.rows[..mt].iter().zip(&sc.rw) {
            let at = b.pos[i];
            if at == usize::MAX {
                return Err(ModelsError::Invalid(format!(
                    "LASSO fit {}: a training row is outside the rows of its basis",
                    req.fit_id
                )));
            }
            let qi = &b.q[at * k..(at + 1) * k];
            let mut t = 0;
            for a_ in 0..k {
                let wa = w * qi[a_];
                for &qb in &qi[a_..] {
                    m[t] += wa * qb;
                    t += 1;
                }
            }
        }
        out.hess_basis = m;
        out.wx = Vec::new();
    }
    if let Some(b) = basis
        && matches!(
            req.kind,
            RequestKind::Irls {
                send_basis: true,
                ..
            }
        )
    {
        out.basis_r = b.r.clone();
    }
    // Single precision for x̃ᵀWx̃ (see [`IrlsSums::hess`]).
    for x in out.hess.iter_mut().chain(out.hess_factor.iter_mut()) {
        *x = f64::from(*x as f32);
    }
    Ok(FitSums::Irls(out))
}

/// POOLED REFERENCE sums of one request over rows `x`, `y` with training weights `v` and
/// held-out weights `h`: a plain loop over the rows, accumulating every product in row order.
/// Deliberately independent of [`site_kernel`] (which the federated path uses), so the oracle
/// tests compare two implementations of the sums.
fn sums_reference(
    x: ArrayView2<f64>,
    yv: &[f64],
    v: &[f64],
    h: &[f64],
    req: &FitRequest,
) -> Result<FitSums> {
    let (n, p) = x.dim();
    if let RequestKind::Moments = req.kind {
        return Ok(moment_sums(x, yv, v, req.fit_id));
    }
    let (mean, sd, beta0, beta, hessian, cols) = irls_fields(req, p, None)?;
    let mut xt = vec![0.0; p];
    let mut s = IrlsSums {
        fit_id: req.fit_id,
        sum_w: 0.0,
        loss: 0.0,
        r0: 0.0,
        rx: vec![0.0; p],
        w0: 0.0,
        wx: vec![0.0; p],
        hess: match (hessian, cols) {
            (false, _) => Vec::new(),
            (true, None) => vec![0.0; packed_len(p)],
            (true, Some(c)) => vec![0.0; p * c.len()],
        },
        hess_factor: Vec::new(),
        hess_basis: Vec::new(),
        basis_r: Vec::new(),
        heldout_w: 0.0,
        heldout_dev: 0.0,
    };
    for i in 0..n {
        if v[i] == 0.0 && h[i] == 0.0 {
            continue;
        }
        let mut eta = beta0;
        for j in 0..p {
            xt[j] = if sd[j] > 0.0 {
                (x[[i, j]] - mean[j]) / sd[j]
            } else {
                0.0
            };
            eta += xt[j] * beta[j];
        }
        let pr = sigmoid(eta);
        let y = yv[i];
        if h[i] > 0.0 {
            s.heldout_w += h[i];
            s.heldout_dev += h[i] * binomial_deviance(y, pr);
        }
        let vi = v[i];
        if vi == 0.0 {
            continue;
        }
        s.sum_w += vi;
        s.loss += vi * (softplus(eta) - y * eta);
        let r = vi * (y - pr);
        let w = vi * pr * (1.0 - pr);
        s.r0 += r;
        s.w0 += w;
        let mut k = 0;
        for a in 0..p {
            s.rx[a] += r * xt[a];
            let wa = w * xt[a];
            s.wx[a] += wa;
            match (hessian, cols) {
                (false, _) => {}
                (true, None) => {
                    for b in a..p {
                        s.hess[k] += wa * xt[b];
                        k += 1;
                    }
                }
                (true, Some(c)) => {
                    let row = &mut s.hess[a * c.len()..(a + 1) * c.len()];
                    for (h, &b) in row.iter_mut().zip(c) {
                        *h += wa * xt[b as usize];
                    }
                }
            }
        }
    }
    if evaluation_only(req)? {
        s.rx.clear();
        s.wx.clear();
    }
    Ok(FitSums::Irls(s))
}

// ------------------------------------------------------------------------------------------
// Aggregator: coordinate descent on the summed quadratic model
// ------------------------------------------------------------------------------------------

/// Summed IRLS statistics of one fit (all sites).
#[derive(Debug, Clone)]
struct Quad {
    v: f64,
    loss: f64,
    r0: f64,
    rx: Vec<f64>,
    w0: f64,
    wx: Vec<f64>,
    h: Option<Array2<f64>>,
    /// `h` column by column, contiguous (`hcol[j·p + k] = h[k, j]`): coordinate descent walks
    /// one column per coordinate update, and a strided column of the row-major `h` cost a
    /// cache line per element. Filled by [`Quad::finish_columns`] once `h` is complete.
    hcol: Vec<f64>,
    /// Columns of `h` that were sent (all true for a full Hessian).
    known: Vec<bool>,
    /// `h` is the fit's stored matrix from an earlier round, not this round's.
    reused: bool,
    heldout_w: f64,
    heldout_dev: f64,
}

impl Quad {
    /// Fills [`Quad::hcol`] from the complete `h`.
    fn finish_columns(&mut self) {
        self.hcol.clear();
        if let Some(h) = &self.h {
            let p = h.nrows();
            // A full or stored matrix was unpacked from one triangle, so it is exactly symmetric
            // and its rows are its columns; only a screened one (each sent column summed on its
            // own) needs the transpose.
            let symmetric = self.reused || self.known.iter().all(|&k| k);
            match h.as_slice() {
                Some(rows) if symmetric => self.hcol.extend_from_slice(rows),
                _ => {
                    self.hcol.reserve(p * p);
                    for j in 0..p {
                        self.hcol.extend(h.column(j).iter());
                    }
                }
            }
        }
    }
}

/// Coordinate descent (covariance updates) on the quadratic model expanded at (b0, b):
/// minimises −(1/V)[r0δ0 + rxᵀδ] + (1/2V)[w0δ0² + 2δ0 wxᵀδ + δᵀHδ] + λ‖b + δ‖₁.
///
/// glmnet's cyclic coordinate descent, plus an exact finish: whenever a sweep leaves the active
/// set and its signs unchanged, the model restricted to that set is a smooth quadratic whose
/// minimiser solves one (|A|+1)-dimensional linear system; if that point keeps the signs and
/// satisfies |∂_j| ≤ λ for every inactive j (the subproblem's KKT conditions), it *is* the
/// subproblem's unique minimiser and is returned. Otherwise descent continues. With strongly
/// correlated features plain CD needs hundreds of sweeps for a tight tolerance; the finish makes
/// the answer exact to round-off in a few.
/// Returns the new point and the number of sweeps.
fn cd_solve(
    q: &Quad,
    b0: f64,
    b: &[f64],
    lambda: f64,
    ju: &[bool],
    tol: f64,
    max_sweeps: usize,
) -> Result<(f64, Vec<f64>, usize)> {
    let h =
        q.h.as_ref()
            .ok_or_else(|| ModelsError::Invalid("coordinate descent needs the Hessian".into()))?;
    let p = b.len();
    if q.hcol.len() != p * p {
        return Err(ModelsError::Invalid(
            "coordinate descent needs the Hessian by columns".into(),
        ));
    }
    let v = q.v;
    let mut c0 = b0;
    let mut c = b.to_vec();
    // gradient of the smooth model at the current point (δ = 0)
    let mut g: Vec<f64> = q.rx.iter().map(|r| -r / v).collect();
    let mut g0 = -q.r0 / v;
    let a0 = q.w0 / v;
    let sign_pattern = |x: &[f64], out: &mut Vec<i8>| {
        out.clear();
        out.extend(x.iter().map(|x| x.signum() as i8 * i8::from(*x != 0.0)));
    };
    // The start's own pattern counts as the sweep before the first: when a sweep keeps it (an
    // IRLS step near convergence, or a warm start at a neighbouring λ, rarely changes the
    // support) the finish is tried after one sweep instead of two.
    let mut last_pattern: Vec<i8> = Vec::with_capacity(p);
    sign_pattern(b, &mut last_pattern);
    let mut failed_pattern: Vec<i8> = Vec::new();
    let mut pattern: Vec<i8> = Vec::with_capacity(p);
    // Before any sweep: most subproblems along a path (the rounds that confirm a λ, the first
    // step at the next λ) keep the start's support and signs, and then the finish of the
    // start's pattern is the answer without a sweep. The finish verifies the pattern itself
    // (signs and KKT), and its result depends only on the pattern, so the answer is the one the
    // sweeps would reach.
    match exact_finish(q, h, b0, b, &last_pattern, lambda, ju) {
        Some((e0, e)) => return Ok((e0, e, 0)),
        None => failed_pattern.clone_from(&last_pattern),
    }
    for sweep in 1..=max_sweeps {
        let mut dmax: f64 = 0.0;
        for j in 0..p {
            if !ju[j] {
                continue;
            }
            let col = &q.hcol[j * p..(j + 1) * p];
            let a = col[j] / v;
            if a <= 0.0 {
                continue;
            }
            let u = a * c[j] - g[j];
            let new = if u > lambda {
                (u - lambda) / a
            } else if u < -lambda {
                (u + lambda) / a
            } else {
                0.0
            };
            let d = new - c[j];
            if d != 0.0 {
                c[j] = new;
                for (gk, &hk) in g.iter_mut().zip(col) {
                    *gk += hk * d / v;
                }
                g0 += q.wx[j] * d / v;
                dmax = dmax.max(a * d * d);
            }
        }
        if a0 > 0.0 {
            let d0 = -g0 / a0;
            if d0 != 0.0 {
                c0 += d0;
                for (k, gk) in g.iter_mut().enumerate() {
                    *gk += q.wx[k] * d0 / v;
                }
                g0 += a0 * d0;
                dmax = dmax.max(a0 * d0 * d0);
            }
        }
        if dmax < tol {
            return Ok((c0, c, sweep));
        }
        sign_pattern(&c, &mut pattern);
        // The finish depends only on the sign pattern, so a pattern whose finish failed (its
        // restricted system is singular, or its minimiser breaks the signs or KKT) is not tried
        // again: retrying it every sweep made a slowly converging λ cost a Cholesky per sweep.
        if pattern == last_pattern && pattern != failed_pattern {
            match exact_finish(q, h, b0, b, &pattern, lambda, ju) {
                Some((e0, e)) => return Ok((e0, e, sweep)),
                None => failed_pattern.clone_from(&pattern),
            }
        }
        std::mem::swap(&mut last_pattern, &mut pattern);
    }
    Err(ModelsError::NotConverged {
        what: "LASSO coordinate descent".into(),
        iterations: max_sweeps,
    })
}

/// Coordinates whose Hessian column was not sent (so CD kept them at 0) but whose model gradient
/// at the new point (c0, c) exceeds λ: they violate KKT and must be added to the screened set.
#[allow(clippy::too_many_arguments)]
fn unknown_violators(
    q: &Quad,
    h: &Array2<f64>,
    b0: f64,
    b: &[f64],
    c0: f64,
    c: &[f64],
    lambda: f64,
    sd: &[f64],
) -> Vec<usize> {
    let p = b.len();
    let d0 = c0 - b0;
    (0..p)
        .filter(|&j| !q.known[j] && sd[j] > 0.0)
        .filter(|&j| {
            let hd: f64 = (0..p)
                .filter(|&k| q.known[k])
                .map(|k| h[[j, k]] * (c[k] - b[k]))
                .sum();
            let g = (-q.rx[j] + q.wx[j] * d0 + hd) / q.v;
            g.abs() > lambda * (1.0 + 1e-12)
        })
        .collect()
}

/// Minimiser of the quadratic model with the sign pattern fixed (see [`cd_solve`]), if it is
/// consistent with the pattern and the inactive KKT conditions.
fn exact_finish(
    q: &Quad,
    h: &Array2<f64>,
    b0: f64,
    b: &[f64],
    pattern: &[i8],
    lambda: f64,
    ju: &[bool],
) -> Option<(f64, Vec<f64>)> {
    let p = b.len();
    let v = q.v;
    let act: Vec<usize> = (0..p).filter(|&j| pattern[j] != 0).collect();
    let m = act.len() + 1;
    // unknowns: δ0 and δ_A; inactive coordinates move to 0: δ_j = −b_j.
    let dz: Vec<f64> = (0..p)
        .map(|j| if pattern[j] == 0 { -b[j] } else { 0.0 })
        .collect();
    let hz = |k: usize| -> f64 { (0..p).map(|j| h[[k, j]] * dz[j]).sum() };
    let wz: f64 = (0..p).map(|j| q.wx[j] * dz[j]).sum();
    let mut a = Array2::<f64>::zeros((m, m));
    let mut rhs = ndarray::Array1::<f64>::zeros(m);
    a[[0, 0]] = q.w0;
    rhs[0] = q.r0 - wz;
    for (s, &j) in act.iter().enumerate() {
        a[[0, s + 1]] = q.wx[j];
        a[[s + 1, 0]] = q.wx[j];
        for (t, &k) in act.iter().enumerate() {
            a[[s + 1, t + 1]] = h[[j, k]];
        }
        rhs[s + 1] = q.rx[j] - hz(j) - v * lambda * f64::from(pattern[j]);
    }
    let l = cholesky(&a, "LASSO active-set finish").ok()?;
    let sol = chol_solve_vec(&l, rhs.view());
    let mut delta = dz;
    for (s, &j) in act.iter().enumerate() {
        delta[j] = sol[s + 1];
    }
    let c: Vec<f64> = (0..p).map(|j| b[j] + delta[j]).collect();
    // sign consistency on the active set
    if act
        .iter()
        .any(|&j| c[j] == 0.0 || c[j].signum() as i8 != pattern[j])
    {
        return None;
    }
    // KKT for inactive coordinates: |∂_j| ≤ λ
    for j in 0..p {
        if pattern[j] != 0 || !ju[j] {
            continue;
        }
        let gj =
            (-q.rx[j] + q.wx[j] * sol[0] + (0..p).map(|k| h[[j, k]] * delta[k]).sum::<f64>()) / v;
        if gj.abs() > lambda * (1.0 + 1e-12) {
            return None;
        }
    }
    Some((b0 + sol[0], c))
}

// ------------------------------------------------------------------------------------------
// Configuration and results
// ------------------------------------------------------------------------------------------

/// How bootstrap replicates choose their λ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootstrapLambda {
    /// Each replicate is fitted at the main CV's λ.min (the solution of
    /// `glmnet(x*, y*, lambda = lambda.min)`); starts after the main CV has finished. IRLS
    /// starts warm, at the main fit's solution at λ.min (carried to the replicate's own
    /// standardisation), instead of glmnet's null model: with a design of full column rank the
    /// objective is strictly convex, so the solution is the same, and a replicate needs fewer
    /// Newton steps (each one a round trip
    /// with a full x̃ᵀWx̃ from every site for every replicate).
    MainLambdaMin,
    /// As `MainLambdaMin` with λ.1se.
    MainLambda1se,
    /// Each replicate runs its own path and K-fold CV (cv.glmnet on the replicate) and uses its
    /// own λ.min; all replicates run in lock-step with the main CV.
    PerReplicateCv,
}

/// Bootstrap selection-frequency settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of replicates B.
    pub replicates: u32,
    /// Seed the sites draw their multiplicities from (with replicate and site id).
    pub seed: u64,
    /// How many features to report as the top-k.
    pub top_k: usize,
    /// λ choice per replicate.
    pub lambda: BootstrapLambda,
}

/// LASSO study configuration (glmnet defaults where glmnet has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoConfig {
    /// Number of features p.
    pub n_features: usize,
    /// Path length (glmnet `nlambda`, 100).
    pub nlambda: usize,
    /// glmnet `lambda.min.ratio`; None = 1e-4 if V ≥ p else 1e-2.
    pub lambda_min_ratio: Option<f64>,
    /// Number of CV folds K (fold ids 0..K in the sites' fold scheme).
    pub nfolds: u32,
    /// Which of the sites' fold schemes holds the CV folds.
    pub fold_scheme: u32,
    /// Rows of this fold are left out of the whole LASSO study (the outer test fold when the
    /// LASSO runs inside a nested CV; the inner folds of `fold_scheme` then partition the rest).
    #[serde(default)]
    pub outer: Option<FoldRef>,
    /// IRLS convergence: max_j (H_jj/V)Δβ_j² < irls_tol.
    pub irls_tol: f64,
    /// Coordinate-descent convergence: max_j (H_jj/V)d_j² < cd_tol.
    pub cd_tol: f64,
    /// IRLS steps per λ before the path is truncated (glmnet reports non-convergence the same way).
    pub max_irls: usize,
    /// Coordinate-descent sweeps per IRLS step.
    pub max_sweeps: usize,
    /// glmnet `devmax` (0.999).
    pub devmax: f64,
    /// glmnet `fdev` (1e-5).
    pub fdev: f64,
    /// glmnet `mnlam` (5).
    pub mnlam: usize,
    /// Bootstrap selection frequencies (None = CV only).
    pub bootstrap: Option<BootstrapConfig>,
    /// Send each fit's standardisation (mean and SD of every feature) only until a round with
    /// it has been answered; later requests of the fit leave both empty and the site uses the
    /// one it kept ([`site_irls_sums_keeping`]). For sites that keep state between rounds (the
    /// pipeline's): two thirds of an IRLS request's bytes were its standardisation, repeated in
    /// every round although it is fixed after the fit's moments round.
    #[serde(default)]
    pub standardisation_once: bool,
    /// Ask for x̃ᵀWx̃ in each site's row basis ([`IrlsSums::hess_basis`]; needs
    /// `standardisation_once`, and features already on a common scale, as the pipeline's
    /// z-scored ones are: every fit's standardisation is then a mild affine map of the main fit's). A
    /// site's answer per request shrinks from p·k single-precision numbers to k(k+1)/2 doubles
    /// (k ≤ its rows, about a dozen against p = 55), the site computes a k × k matrix instead of
    /// a p × p one, and the aggregator rebuilds every column (no screening round trips). Not for
    /// masked rounds: the per-site bases do not add up across sites.
    #[serde(default)]
    pub hessian_basis: bool,
}

impl LassoConfig {
    /// glmnet/cv.glmnet defaults for `n_features` features and `nfolds` folds.
    pub fn new(n_features: usize, nfolds: u32) -> Self {
        LassoConfig {
            n_features,
            nlambda: 100,
            lambda_min_ratio: None,
            nfolds,
            fold_scheme: 0,
            outer: None,
            irls_tol: 1e-10,
            cd_tol: 1e-20,
            max_irls: 100,
            max_sweeps: 100_000,
            devmax: 0.999,
            fdev: 1e-5,
            mnlam: 5,
            bootstrap: None,
            standardisation_once: false,
            hessian_basis: false,
        }
    }
}

/// A fitted path (one fit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathResult {
    /// λ values with a solution.
    pub lambdas: Vec<f64>,
    /// Intercepts (standardised scale).
    pub beta0: Vec<f64>,
    /// Coefficients (standardised scale), one vector per λ.
    pub beta: Vec<Vec<f64>>,
    /// Intercepts on the original feature scale.
    pub beta0_original: Vec<f64>,
    /// Coefficients on the original feature scale.
    pub beta_original: Vec<Vec<f64>>,
    /// Fraction of null deviance explained per λ (when evaluated).
    pub dev_ratio: Vec<f64>,
    /// Number of non-zero coefficients per λ.
    pub nzero: Vec<usize>,
    /// Null deviance 2·Σv ℓ(null).
    pub null_deviance: f64,
    /// The fit's feature means.
    pub mean: Vec<f64>,
    /// The fit's feature SDs (1/V).
    pub sd: Vec<f64>,
    /// Σv.
    pub sum_w: f64,
    /// False when IRLS hit `max_irls` and the path was truncated.
    pub converged: bool,
}

/// cv.glmnet-style result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvResult {
    /// λ sequence (full fit's path).
    pub lambdas: Vec<f64>,
    /// Mean CV deviance.
    pub cvm: Vec<f64>,
    /// Its standard error.
    pub cvsd: Vec<f64>,
    /// Index of λ.min.
    pub index_min: usize,
    /// Index of λ.1se.
    pub index_1se: usize,
    /// λ.min.
    pub lambda_min: f64,
    /// λ.1se.
    pub lambda_1se: f64,
    /// Full-data path.
    pub path: PathResult,
    /// Features with non-zero coefficient at λ.min.
    pub selected_min: Vec<usize>,
}

/// Bootstrap selection frequencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapResult {
    /// B.
    pub replicates: u32,
    /// λ used by each replicate.
    pub lambda_used: Vec<f64>,
    /// Features selected by each replicate.
    pub selected: Vec<Vec<usize>>,
    /// Standardised-scale coefficients of each replicate at its λ.
    pub beta: Vec<Vec<f64>>,
    /// Selection frequency per feature (count / B).
    pub frequency: Vec<f64>,
    /// Mean |β_j| (standardised scale, 0 when not selected) per feature.
    pub mean_abs_beta: Vec<f64>,
    /// All features ranked: frequency desc, then mean |β| desc, then index asc.
    pub ranking: Vec<usize>,
    /// The first `top_k` of `ranking`.
    pub top_k: Vec<usize>,
}

/// Everything a LASSO study produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoResult {
    /// Main CV.
    pub cv: CvResult,
    /// Bootstrap selection, when configured.
    pub bootstrap: Option<BootstrapResult>,
    /// Round trips used.
    pub rounds: u32,
    /// Requests answered per site in total (Σ over rounds of the request list length, counting
    /// IRLS steps, moments and Hessian-free evaluations).
    pub fit_requests: u64,
}

// ------------------------------------------------------------------------------------------
// Driver state
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Role {
    Full,
    Fold,
    /// Single-λ bootstrap replicate.
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Solution {
    beta0: f64,
    beta: Vec<f64>,
    loss: Option<f64>,
    heldout: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Prev {
    beta0: f64,
    beta: Vec<f64>,
    loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum FitState {
    NeedMoments,
    /// Has its standardisation; waits for λ (fixed bootstrap fits).
    Waiting,
    Irls {
        /// λ index being solved (== path length when only an evaluation is pending).
        k: usize,
        beta0: f64,
        beta: Vec<f64>,
        prev: Option<Prev>,
        iter: usize,
        halvings: u32,
    },
    Done,
}

/// A converged solution whose exact loss / held-out deviance still has to be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingEval {
    k: usize,
    beta0: f64,
    beta: Vec<f64>,
}

/// One entry of a round's request list: a fit's IRLS/moments request or an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Main(usize),
    Eval(usize, usize),
}

impl Slot {
    fn fit(self) -> usize {
        match self {
            Slot::Main(i) | Slot::Eval(i, _) => i,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fit {
    id: u32,
    weights: WeightSpec,
    role: Role,
    group: Option<usize>,
    mean: Vec<f64>,
    sd: Vec<f64>,
    ybar: f64,
    sum_w: f64,
    null_loss: Option<f64>,
    lambda_fixed: Option<f64>,
    state: FitState,
    solutions: Vec<Solution>,
    /// Path truncated because IRLS did not converge.
    truncated: bool,
    /// Requests answered for this fit (= round trips it took part in).
    requests: u32,
    /// |x̃_jᵀr|/V at the last IRLS reply (for the strong rule).
    last_grad: Vec<f64>,
    /// Coordinates that violated KKT after a screened step (always requested from then on).
    forced: Vec<bool>,
    /// Converged solutions awaiting their evaluation, in λ order.
    pending: Vec<PendingEval>,
    /// λ index at which IRLS failed to converge (path truncated before it).
    truncated_at: Option<usize>,
    /// The x̃ᵀWx̃ of this path fit's last Hessian round, kept for [`LassoDriver::wants_hessian`].
    #[serde(default)]
    model_h: Option<StoredHessian>,
    /// Scaled size max_j (H_jj/V)Δβ_j² of the step that produced the current iterate; None
    /// after anything else (start, λ change taken in a round of its own, halving, widened
    /// screen), which always asks for a fresh Hessian.
    #[serde(default)]
    last_step: Option<f64>,
    /// A round whose request carried this fit's standardisation has been answered (with
    /// [`LassoConfig::standardisation_once`], later requests leave it out).
    #[serde(default)]
    std_at_site: bool,
}

/// A path fit's last received x̃ᵀWx̃: the packed upper triangle of the summed matrix (rows of
/// screened-out columns filled by symmetry, their mutual block 0) and which columns were sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredHessian {
    packed: Vec<f64>,
    known: Vec<bool>,
}

/// Largest scaled step (max_j (H_jj/V)Δβ_j², the IRLS criterion's metric) after which a path
/// fit's next IRLS round reuses its last x̃ᵀWx̃ instead of asking every site for a new one.
///
/// Why the answer stays exact: the solution is where the gradient terms (x̃ᵀr, Σr, always
/// fresh) meet the KKT conditions; the Hessian only shapes the step (inexact Newton), and
/// convergence is still declared only when the step computed from fresh gradient sums falls
/// below `irls_tol`. Why it costs no rounds: after a step this small (Δβ ≲ 3e-4 on the
/// standardised scale) each weight w_i = v_i·p_i(1 − p_i) has moved by at most |Δη_i| relatively
/// (|d log w/dη| = |1 − 2p| ≤ 1), about 1e-2 at worst, so the old matrix still contracts the
/// error by ~1e-2 and the next step lands below `irls_tol` just as a fresh Newton step does.
/// Typically the round that only confirms a λ's convergence needs no Hessian: on the pipeline
/// study's cohort this saves 15 % of the x̃ᵀWx̃ values the sites compute and send, with the same
/// number of rounds (a threshold of 1e-5 saved 45 % but doubled the rounds: slow tails added up).
/// Bootstrap replicates (one λ, a few rounds) always take fresh Hessians.
const HESSIAN_REUSE_STEP: f64 = 1e-7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    full: usize,
    folds: Vec<usize>,
    lambdas: Option<Vec<f64>>,
    /// Final path length once the full fit has stopped.
    path_len: Option<usize>,
    cv: Option<CvResult>,
}

/// AGGREGATOR HALF: the LASSO state machine. The network layer calls [`LassoDriver::next_requests`],
/// sends the same requests to every site, collects each site's [`site_irls_sums`] reply and
/// passes them in site order to [`LassoDriver::apply`], until [`LassoDriver::is_done`]. The
/// state is serde-serialisable so the aggregator can persist it between rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoDriver {
    config: LassoConfig,
    fits: Vec<Fit>,
    groups: Vec<Group>,
    rounds: u32,
    fit_requests: u64,
    boot_started: bool,
    /// Each site's basis `R` (k × (p + 1), row-major; site order), once received
    /// ([`LassoConfig::hessian_basis`]).
    #[serde(default)]
    bases: Vec<Vec<f64>>,
}

const NEGLIGIBLE_STEP: f64 = 1e-30;

/// A fit's whole `[1 | x̃]ᵀW[1 | x̃]` ((p + 1) × (p + 1), intercept first) from each site's basis
/// `R_s` (k_s × (p + 1)) and `M_s = QᵀWQ` (packed k_s × k_s), in site order
/// ([`IrlsSums::hess_basis`]). The basis rows are `[1 | x̃₀]`, standardised by the basis fit's
/// (mean₀, sd₀); the fit's own x̃_j = x̃₀_j·sd₀_j/sd_j + (mean₀_j − mean_j)/sd_j is the column map
/// `T`, so each site contributes `(R_s·T)ᵀ·M_s·(R_s·T)`. An excluded feature (sd = 0) gets a
/// zero row and column, as the sites' own x̃ gives it.
fn basis_hessian(
    parts: &[(&Vec<f64>, &Vec<f64>)],
    basis_fit: &Fit,
    mean: &[f64],
    sd: &[f64],
    p: usize,
) -> Result<Array2<f64>> {
    let m = p + 1;
    let (m0, sd0) = (&basis_fit.mean, &basis_fit.sd);
    if m0.len() != p || mean.len() != p || sd.len() != p {
        return Err(ModelsError::Invalid(
            "LASSO: a fit's standardisation does not match its basis".into(),
        ));
    }
    let mut scale = vec![0.0; p];
    let mut shift = vec![0.0; p];
    for j in 0..p {
        if sd[j] > 0.0 {
            if sd0[j] <= 0.0 {
                return Err(ModelsError::Invalid(format!(
                    "LASSO: feature {j} varies in a sub-fit but is constant in the basis fit"
                )));
            }
            scale[j] = sd0[j] / sd[j];
            shift[j] = (m0[j] - mean[j]) / sd[j];
        }
    }
    let total: usize = parts.iter().map(|(r, _)| r.len() / m).sum();
    // B = [R_s·T] and C = [M_s·R_s·T], stacked over the sites (row-major, total × m).
    let mut b = vec![0.0; total * m];
    let mut c = vec![0.0; total * m];
    let mut mfull = Vec::new();
    let mut at = 0;
    for (r, mp) in parts {
        let k = r.len() / m;
        if mp.len() != packed_len(k) {
            return Err(ModelsError::Dimension {
                what: "LASSO answer in the row basis".into(),
                expected: packed_len(k),
                got: mp.len(),
            });
        }
        let bs = &mut b[at * m..(at + k) * m];
        for (brow, row) in bs.chunks_exact_mut(m).zip(r.chunks_exact(m)) {
            brow[0] = row[0];
            for j in 0..p {
                brow[j + 1] = row[0] * shift[j] + row[j + 1] * scale[j];
            }
        }
        mfull.clear();
        mfull.resize(k * k, 0.0);
        let mut t = 0;
        for a in 0..k {
            for e in a..k {
                mfull[a * k + e] = mp[t];
                mfull[e * k + a] = mp[t];
                t += 1;
            }
        }
        let bs = &b[at * m..(at + k) * m];
        for (a, crow) in c[at * m..(at + k) * m].chunks_exact_mut(m).enumerate() {
            for (&mae, brow) in mfull[a * k..(a + 1) * k].iter().zip(bs.chunks_exact(m)) {
                if mae != 0.0 {
                    for (x, &y) in crow.iter_mut().zip(brow) {
                        *x += mae * y;
                    }
                }
            }
        }
        at += k;
    }
    let b = ndarray::ArrayView2::from_shape((total, m), &b[..])
        .map_err(|e| ModelsError::Invalid(format!("LASSO basis shape: {e}")))?;
    let c = ndarray::ArrayView2::from_shape((total, m), &c[..])
        .map_err(|e| ModelsError::Invalid(format!("LASSO basis shape: {e}")))?;
    let mut h = Array2::<f64>::zeros((m, m));
    ndarray::linalg::general_mat_mul(1.0, &b.t(), &c, 0.0, &mut h);
    Ok(h)
}

fn l1(b: &[f64]) -> f64 {
    b.iter().map(|x| x.abs()).sum()
}

impl LassoDriver {
    /// Creates the driver: the main CV group (full fit + K fold fits) and, if configured, the
    /// bootstrap fits (K + 1 per replicate for [`BootstrapLambda::PerReplicateCv`], one
    /// otherwise).
    pub fn new(config: LassoConfig) -> Result<Self> {
        if config.n_features == 0 || config.nlambda < 2 || config.nfolds < 2 {
            return Err(ModelsError::Invalid(
                "LASSO needs ≥ 1 feature, nlambda ≥ 2 and nfolds ≥ 2".into(),
            ));
        }
        if config.hessian_basis && !config.standardisation_once {
            return Err(ModelsError::Invalid(
                "the LASSO's Hessian basis needs sites that keep standardisations \
                 (standardisation_once)"
                    .into(),
            ));
        }
        let mut d = LassoDriver {
            config: config.clone(),
            fits: Vec::new(),
            groups: Vec::new(),
            rounds: 0,
            fit_requests: 0,
            boot_started: false,
            bases: Vec::new(),
        };
        d.add_group(None);
        if let Some(b) = config.bootstrap {
            for r in 0..b.replicates {
                let boot = Some((b.seed, r));
                match b.lambda {
                    BootstrapLambda::PerReplicateCv => d.add_group(boot),
                    _ => {
                        let id = d.fits.len() as u32;
                        d.fits.push(Fit::new(
                            id,
                            WeightSpec {
                                outer: config.outer,
                                exclude: None,
                                bootstrap: boot,
                            },
                            Role::Fixed,
                            None,
                        ));
                    }
                }
            }
        }
        Ok(d)
    }

    fn add_group(&mut self, bootstrap: Option<(u64, u32)>) {
        let g = self.groups.len();
        let full = self.fits.len();
        self.fits.push(Fit::new(
            full as u32,
            WeightSpec {
                outer: self.config.outer,
                exclude: None,
                bootstrap,
            },
            Role::Full,
            Some(g),
        ));
        let mut folds = Vec::new();
        for k in 0..self.config.nfolds {
            let id = self.fits.len();
            folds.push(id);
            self.fits.push(Fit::new(
                id as u32,
                WeightSpec {
                    outer: self.config.outer,
                    exclude: Some(FoldRef {
                        scheme: self.config.fold_scheme,
                        fold: k,
                    }),
                    bootstrap,
                },
                Role::Fold,
                Some(g),
            ));
        }
        self.groups.push(Group {
            full,
            folds,
            lambdas: None,
            path_len: None,
            cv: None,
        });
    }

    /// Number of fits (full, fold and bootstrap).
    pub fn n_fits(&self) -> usize {
        self.fits.len()
    }

    /// Per fit (in creation order: main full fit, its folds, then bootstrap fits): the number of
    /// round trips it took part in (its own sequential cost).
    pub fn requests_per_fit(&self) -> Vec<u32> {
        self.fits.iter().map(|f| f.requests).collect()
    }

    /// Round trips applied so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// True when every fit and every CV is finished.
    pub fn is_done(&self) -> bool {
        self.fits.iter().all(|f| f.state == FitState::Done)
            && self.groups.iter().all(|g| g.cv.is_some())
    }

    /// This round's request list: per unfinished fit, its pending evaluations (in λ order), then
    /// its moments / IRLS request if it has one.
    fn plan(&self) -> Vec<Slot> {
        let mut out = Vec::new();
        for (i, f) in self.fits.iter().enumerate() {
            if matches!(f.state, FitState::Done | FitState::Waiting) {
                continue;
            }
            out.extend((0..f.pending.len()).map(|e| Slot::Eval(i, e)));
            let main = match &f.state {
                FitState::NeedMoments => true,
                FitState::Irls { k, .. } => *k < self.path_limit(i),
                _ => false,
            };
            if main {
                out.push(Slot::Main(i));
            }
        }
        out
    }

    /// This round's requests (the same for every site).
    pub fn next_requests(&self) -> Vec<FitRequest> {
        let plan = self.plan();
        let basis = self.basis_ready(&plan).then(|| self.fits[0].id);
        // The first request in the basis asks for its R too, until the sites' are kept.
        let mut ask_r = basis.is_some() && self.bases.is_empty();
        plan.into_iter()
            .map(|slot| {
                let i = slot.fit();
                let f = &self.fits[i];
                let (mean, sd) = if self.config.standardisation_once && f.std_at_site {
                    (Vec::new(), Vec::new())
                } else {
                    (f.mean.clone(), f.sd.clone())
                };
                let kind = match (slot, &f.state) {
                    (Slot::Eval(_, e), _) => RequestKind::Irls {
                        mean,
                        sd,
                        beta0: f.pending[e].beta0,
                        beta: f.pending[e].beta.clone(),
                        hessian: false,
                        cols: None,
                        eval_only: true,
                        basis: None,
                        send_basis: false,
                    },
                    (Slot::Main(_), FitState::Irls { beta0, beta, .. }) => {
                        let hessian = self.wants_hessian(i);
                        let basis = basis.filter(|_| hessian);
                        let send_basis = basis.is_some() && std::mem::take(&mut ask_r);
                        RequestKind::Irls {
                            mean,
                            sd,
                            beta0: *beta0,
                            beta: beta.clone(),
                            hessian,
                            cols: if hessian {
                                self.columns(i, basis.is_some())
                            } else {
                                None
                            },
                            eval_only: false,
                            basis,
                            send_basis,
                        }
                    }
                    _ => RequestKind::Moments,
                };
                FitRequest {
                    fit_id: f.id,
                    weights: f.weights,
                    kind,
                }
            })
            .collect()
    }

    /// Whether this round's Hessians go in the sites' row bases ([`LassoConfig::hessian_basis`]):
    /// once the basis fit (the main full fit) has its standardisation and every site holds it
    /// or gets it in this round's requests.
    fn basis_ready(&self, plan: &[Slot]) -> bool {
        let b = &self.fits[0];
        self.config.hessian_basis
            && !b.mean.is_empty()
            && (b.std_at_site || plan.iter().any(|s| s.fit() == 0))
    }

    /// The Hessian columns a request of fit `i` names: none (the whole matrix) when every site
    /// is known to answer in its row basis, which carries every column at no extra cost; else
    /// the screened set ([`LassoDriver::screen`]), which sites that answer plainly then send.
    fn columns(&self, i: usize, in_basis: bool) -> Option<Vec<u32>> {
        let p = self.config.n_features;
        let all_in_basis = in_basis
            && !self.bases.is_empty()
            && self
                .bases
                .iter()
                .all(|r| basis_is_smaller(r.len() / (p + 1), p));
        if all_in_basis { None } else { self.screen(i) }
    }

    /// Hessian columns to request for fit `i` (None = all): glmnet's sequential strong rule
    /// |∂_j| ≥ 2λ_k − λ_{k−1} on the gradient of the last reply, plus every non-zero coefficient
    /// and every coordinate that ever violated KKT (glmnet's "ever-active" set). The first IRLS
    /// request of a fit, and any set larger than half the features, asks for everything. A
    /// screened-out coordinate that violates KKT after the step is added and the step repeated
    /// at the same point, so screening never changes the answer.
    fn screen(&self, i: usize) -> Option<Vec<u32>> {
        let f = &self.fits[i];
        let FitState::Irls { k, beta, .. } = &f.state else {
            return None;
        };
        if f.last_grad.is_empty() || *k >= self.path_limit(i) {
            return None;
        }
        let lam = self.lambda(i, *k).ok()?;
        let tau = if *k > 0 && f.role != Role::Fixed {
            2.0 * lam - self.lambda(i, k - 1).ok()?
        } else {
            0.8 * lam
        };
        let p = beta.len();
        let cols: Vec<u32> = (0..p)
            .filter(|&j| f.sd[j] > 0.0 && (f.forced[j] || beta[j] != 0.0 || f.last_grad[j] >= tau))
            .map(|j| j as u32)
            .collect();
        (2 * cols.len() < p + 1).then_some(cols)
    }

    /// Whether fit `i`'s IRLS request needs a fresh x̃ᵀWx̃ (see [`HESSIAN_REUSE_STEP`]): always,
    /// except for a path fit whose last step was below the threshold and whose stored matrix
    /// holds every column the screen asks for now.
    fn wants_hessian(&self, i: usize) -> bool {
        let f = &self.fits[i];
        let (Some(stored), Some(step)) = (&f.model_h, f.last_step) else {
            return true;
        };
        if f.role == Role::Fixed || step > HESSIAN_REUSE_STEP {
            return true;
        }
        match self.screen(i) {
            None => !stored.known.iter().all(|&k| k),
            Some(cols) => cols.iter().any(|&j| !stored.known[j as usize]),
        }
    }

    /// Maximum number of λ's fit `i` may solve (nlambda, the group's final path length, or 1).
    fn path_limit(&self, i: usize) -> usize {
        let f = &self.fits[i];
        let limit = match (f.role, f.group) {
            (Role::Fixed, _) => 1,
            (_, Some(g)) => self.groups[g].path_len.unwrap_or(self.config.nlambda),
            _ => self.config.nlambda,
        };
        f.truncated_at.map_or(limit, |t| t.min(limit))
    }

    fn lambda(&self, i: usize, k: usize) -> Result<f64> {
        let f = &self.fits[i];
        if let Some(l) = f.lambda_fixed {
            return Ok(l);
        }
        let g = f
            .group
            .ok_or_else(|| ModelsError::Invalid("fit without λ".into()))?;
        self.groups[g]
            .lambdas
            .as_ref()
            .and_then(|l| l.get(k).copied())
            .ok_or_else(|| ModelsError::Invalid(format!("λ index {k} not available")))
    }

    /// Applies every site's replies (outer index = site, in site order). Each site's reply is
    /// anything that reads as a slice of [`FitSums`] (a `Vec`, or a borrowed slice when the
    /// caller keeps the replies elsewhere and should not copy them).
    pub fn apply<R: AsRef<[FitSums]>>(&mut self, replies: &[R]) -> Result<()> {
        let plan = self.plan();
        let in_basis = self.basis_ready(&plan);
        // Per slot: the Hessian columns requested (None = all) and whether a Hessian was.
        let requested: Vec<Option<Vec<u32>>> = plan
            .iter()
            .map(|&slot| self.irls_step(slot).and_then(|i| self.columns(i, in_basis)))
            .collect();
        let reused: Vec<bool> = plan
            .iter()
            .map(|&slot| self.irls_step(slot).is_some_and(|i| !self.wants_hessian(i)))
            .collect();
        if replies.is_empty() {
            return Err(ModelsError::Invalid("no site replies".into()));
        }
        let p = self.config.n_features;
        // Slots whose Hessian comes in the sites' row bases.
        let basis_slot: Vec<bool> = plan
            .iter()
            .zip(&reused)
            .map(|(&slot, &reused)| in_basis && !reused && self.irls_step(slot).is_some())
            .collect();
        if in_basis && self.bases.is_empty() && basis_slot.iter().any(|&b| b) {
            self.bases = self.take_bases(replies)?;
        }
        // Sum per fit in site order. A full Hessian is summed in its packed form and unpacked
        // once per fit (not once per site): the same additions in the same order.
        let mut moments: Vec<Option<MomentSums>> = vec![None; plan.len()];
        let mut quads: Vec<Option<Quad>> = vec![None; plan.len()];
        let mut packed: Vec<Option<Vec<f64>>> = vec![None; plan.len()];
        // Whole-matrix answers sent as low-rank factors (borrowed), multiplied out per fit.
        let mut factors: Vec<Vec<&Vec<f64>>> = vec![Vec::new(); plan.len()];
        // Answers in the sites' row bases (borrowed, site order), rebuilt per fit.
        let mut in_bases: Vec<Vec<(&Vec<f64>, &Vec<f64>)>> = vec![Vec::new(); plan.len()];
        for (site, rep) in replies.iter().enumerate() {
            let rep = rep.as_ref();
            if rep.len() != plan.len() {
                return Err(ModelsError::Dimension {
                    what: format!("LASSO replies of site #{site}"),
                    expected: plan.len(),
                    got: rep.len(),
                });
            }
            for (k, r) in rep.iter().enumerate() {
                let f = &self.fits[plan[k].fit()];
                match (r, &f.state) {
                    (FitSums::Refused(x), _) => return Err(x.clone().into_error(site)),
                    (FitSums::Moments(m), FitState::NeedMoments) => {
                        if m.fit_id != f.id || m.features.len() != p {
                            return Err(mismatch(site, k, f.id));
                        }
                        let acc = moments[k].get_or_insert_with(|| MomentSums {
                            fit_id: f.id,
                            sum_w: 0.0,
                            sum_wy: 0.0,
                            features: vec![WeightedMoments::default(); p],
                        });
                        acc.sum_w += m.sum_w;
                        acc.sum_wy += m.sum_wy;
                        for (a, b) in acc.features.iter_mut().zip(&m.features) {
                            *a = a.merge(b);
                        }
                    }
                    (FitSums::Irls(s), FitState::Irls { .. }) => {
                        // An evaluation's reply has no vectors (`eval_only`; a masked one
                        // opens them as zeros): they are not read.
                        let vectors = if matches!(plan[k], Slot::Eval(..)) && s.rx.is_empty() {
                            0
                        } else {
                            p
                        };
                        // In the row basis, x̃ᵀw comes with the matrix. A site may answer a
                        // request in the basis plainly (see `basis_is_smaller`).
                        let site_basis = !s.hess_basis.is_empty();
                        let plain_h = !s.hess.is_empty() || !s.hess_factor.is_empty();
                        let wx_len = if site_basis { 0 } else { vectors };
                        if s.fit_id != f.id
                            || s.rx.len() != vectors
                            || s.wx.len() != wx_len
                            || (reused[k] && plain_h)
                            || (!s.hess.is_empty() && !s.hess_factor.is_empty())
                            || s.hess_factor.len() % p != 0
                            || s.hess_factor.len() > p * p
                            || (site_basis && (!basis_slot[k] || plain_h))
                            || (basis_slot[k] && !site_basis && !plain_h)
                        {
                            return Err(mismatch(site, k, f.id));
                        }
                        let acc = quads[k].get_or_insert_with(|| Quad {
                            v: 0.0,
                            loss: 0.0,
                            r0: 0.0,
                            rx: vec![0.0; p],
                            w0: 0.0,
                            wx: vec![0.0; p],
                            h: (plain_h || site_basis).then(|| Array2::zeros((p, p))),
                            hcol: Vec::new(),
                            reused: false,
                            known: match &requested[k] {
                                None => vec![true; p],
                                Some(c) => {
                                    let mut m = vec![false; p];
                                    for &j in c {
                                        m[j as usize] = true;
                                    }
                                    m
                                }
                            },
                            heldout_w: 0.0,
                            heldout_dev: 0.0,
                        });
                        acc.v += s.sum_w;
                        acc.loss += s.loss;
                        acc.r0 += s.r0;
                        acc.w0 += s.w0;
                        for j in 0..vectors {
                            acc.rx[j] += s.rx[j];
                        }
                        for j in 0..wx_len {
                            acc.wx[j] += s.wx[j];
                        }
                        if site_basis {
                            let r = self
                                .bases
                                .get(site)
                                .ok_or_else(|| mismatch(site, k, f.id))?;
                            in_bases[k].push((r, &s.hess_basis));
                        } else if let Some(h) = acc.h.as_mut() {
                            let factor = &s.hess_factor;
                            match &requested[k] {
                                None if !factor.is_empty() => factors[k].push(factor),
                                Some(c) if !factor.is_empty() => {
                                    // The requested columns of L·Lᵀ.
                                    let r = factor.len() / p;
                                    for j in 0..p {
                                        for &col in c {
                                            h[[j, col as usize]] +=
                                                factor_entry(factor, r, j, col as usize);
                                        }
                                    }
                                }
                                None => {
                                    if s.hess.len() != packed_len(p) {
                                        return Err(mismatch(site, k, f.id));
                                    }
                                    let sum =
                                        packed[k].get_or_insert_with(|| vec![0.0; packed_len(p)]);
                                    for (a, b) in sum.iter_mut().zip(&s.hess) {
                                        *a += b;
                                    }
                                }
                                Some(c) => {
                                    if s.hess.len() != p * c.len() {
                                        return Err(mismatch(site, k, f.id));
                                    }
                                    for j in 0..p {
                                        for (t, &col) in c.iter().enumerate() {
                                            h[[j, col as usize]] += s.hess[j * c.len() + t];
                                        }
                                    }
                                }
                            }
                        }
                        acc.heldout_w += s.heldout_w;
                        acc.heldout_dev += s.heldout_dev;
                    }
                    _ => return Err(mismatch(site, k, f.id)),
                }
            }
        }
        for (q, sum) in quads.iter_mut().zip(&packed) {
            if let (Some(q), Some(sum)) = (q.as_mut(), sum) {
                q.h = Some(unpack_upper(sum, p)?);
            }
        }
        // Factored answers: h += L·Lᵀ with L = [L_site1 | L_site2 | …] (one product per fit),
        // then mirrored so the matrix is exactly symmetric as an unpacked triangle is.
        for (q, fs) in quads.iter_mut().zip(&factors) {
            if let (Some(q), false) = (q.as_mut(), fs.is_empty())
                && let Some(h) = q.h.as_mut()
            {
                let rank: usize = fs.iter().map(|f| f.len() / p).sum();
                let mut l = Array2::<f64>::zeros((p, rank));
                let mut at = 0;
                for f in fs {
                    let r = f.len() / p;
                    let block = ndarray::ArrayView2::from_shape((p, r), &f[..])
                        .map_err(|e| ModelsError::Invalid(format!("x̃ᵀWx̃ factor: {e}")))?;
                    l.slice_axis_mut(ndarray::Axis(1), ndarray::Slice::from(at..at + r))
                        .assign(&block);
                    at += r;
                }
                ndarray::linalg::general_mat_mul(1.0, &l, &l.t(), 1.0, h);
                for a in 0..p {
                    for b in a + 1..p {
                        h[[b, a]] = h[[a, b]];
                    }
                }
            }
        }
        // Answers in the row bases: [1 | x̃]ᵀW[1 | x̃] = Σ_s (R_s·T)ᵀ M_s (R_s·T), one product
        // per fit over the sites' stacked blocks.
        for (k, parts) in in_bases.iter().enumerate() {
            if let (Some(q), false) = (quads[k].as_mut(), parts.is_empty())
                && let Some(h) = q.h.as_mut()
            {
                let f = &self.fits[plan[k].fit()];
                let full = basis_hessian(parts, &self.fits[0], &f.mean, &f.sd, p)?;
                for a in 0..p {
                    q.wx[a] += full[[0, a + 1]];
                    for b in a..p {
                        h[[a, b]] += full[[a + 1, b + 1]];
                        if b > a {
                            h[[b, a]] = h[[a, b]];
                        }
                    }
                }
            }
        }
        // Rounds that reuse a fit's stored x̃ᵀWx̃ (its columns as they were sent then).
        for (k, q) in quads.iter_mut().enumerate() {
            if let (true, Some(q)) = (reused[k], q.as_mut()) {
                let stored = self.fits[plan[k].fit()].model_h.as_ref().ok_or_else(|| {
                    ModelsError::Invalid("LASSO: a reused Hessian is missing".into())
                })?;
                q.h = Some(unpack_upper(&stored.packed, p)?);
                q.known.clone_from(&stored.known);
                q.reused = true;
            }
        }
        self.rounds += 1;
        self.fit_requests += plan.len() as u64;
        let mut touched: Vec<usize> = plan.iter().map(|s| s.fit()).collect();
        touched.dedup();
        for &i in &touched {
            self.fits[i].requests += 1;
        }
        // Screened Hessians: fill the rows of the sent columns by symmetry.
        for q in quads.iter_mut().flatten() {
            if let Some(h) = q.h.as_mut() {
                for c in (0..p).filter(|&c| q.known[c]) {
                    for j in (0..p).filter(|&j| !q.known[j]) {
                        h[[c, j]] = h[[j, c]];
                    }
                }
            }
            q.finish_columns();
        }
        // Full fits first: they fix their group's λ sequence, which the fold fits need. Within a
        // fit, evaluations (in λ order) come before its step (plan order).
        // (A stable partition: plan order within each part.)
        // Every site has now answered an IRLS request of these fits, which carried (or referred
        // to) the fit's standardisation: it is kept at the sites.
        for (k, slot) in plan.iter().enumerate() {
            if quads[k].is_some() {
                self.fits[slot.fit()].std_at_site = true;
            }
        }
        let (mut order, rest): (Vec<usize>, Vec<usize>) =
            (0..plan.len()).partition(|&k| self.fits[plan[k].fit()].role == Role::Full);
        order.extend(rest);
        for k in order {
            let i = plan[k].fit();
            if self.fits[i].state == FitState::Done {
                continue;
            }
            match plan[k] {
                Slot::Eval(_, e) => {
                    if let Some(q) = quads[k].take() {
                        let ek = self.fits[i].pending[e].k;
                        self.record_eval(i, ek, &q);
                    }
                }
                Slot::Main(_) => {
                    if let Some(m) = moments[k].take() {
                        self.apply_moments(i, m)?;
                    } else if let Some(q) = quads[k].take() {
                        self.apply_irls(i, q)?;
                    }
                }
            }
        }
        // Drop the evaluations that were answered (apply_irls only appends new ones), and
        // finish fits that only waited for evaluations.
        for (idx, f) in self.fits.iter_mut().enumerate() {
            let answered = plan
                .iter()
                .filter(|s| matches!(s, Slot::Eval(i, _) if *i == idx))
                .count();
            if answered > 0 {
                f.pending.drain(..answered.min(f.pending.len()));
            }
        }
        for i in 0..self.fits.len() {
            let limit = self.path_limit(i);
            let f = &mut self.fits[i];
            if let FitState::Irls { k, .. } = f.state
                && k >= limit
                && f.pending.is_empty()
            {
                f.state = FitState::Done;
            }
            if f.state == FitState::Done {
                f.pending.clear();
                f.model_h = None;
            }
        }
        self.finish_groups()?;
        Ok(())
    }

    /// The fit whose IRLS step a slot is (None for an evaluation or a moments request).
    fn irls_step(&self, slot: Slot) -> Option<usize> {
        match slot {
            Slot::Main(i) if matches!(self.fits[i].state, FitState::Irls { .. }) => Some(i),
            _ => None,
        }
    }

    /// Every site's basis `R` from this round's replies (each site sends it once, with the
    /// first request in the basis), checked for shape.
    fn take_bases<R: AsRef<[FitSums]>>(&self, replies: &[R]) -> Result<Vec<Vec<f64>>> {
        let m = self.config.n_features + 1;
        replies
            .iter()
            .enumerate()
            .map(|(site, rep)| {
                // A refusal is the reason a site sent no R: report it as the plain path does.
                if let Some(FitSums::Refused(x)) = rep
                    .as_ref()
                    .iter()
                    .find(|r| matches!(r, FitSums::Refused(_)))
                {
                    return Err(x.clone().into_error(site));
                }
                let mut found = rep.as_ref().iter().filter_map(|r| match r {
                    FitSums::Irls(s) if !s.basis_r.is_empty() => Some(&s.basis_r),
                    _ => None,
                });
                match (found.next(), found.next()) {
                    (Some(r), None) if r.len() % m == 0 && r.len() <= m * m => Ok(r.clone()),
                    _ => Err(ModelsError::Invalid(format!(
                        "LASSO: site #{site} did not send one basis R of width {m} when asked; \
                         the site agent and the aggregator must run the same release"
                    ))),
                }
            })
            .collect()
    }

    fn apply_moments(&mut self, i: usize, m: MomentSums) -> Result<()> {
        let f = &mut self.fits[i];
        if m.sum_w <= 0.0 {
            return Err(ModelsError::Invalid(format!(
                "fit {} has no rows with positive weight",
                f.id
            )));
        }
        f.sum_w = m.sum_w;
        f.ybar = m.sum_wy / m.sum_w;
        if f.ybar <= 0.0 || f.ybar >= 1.0 {
            return Err(ModelsError::Invalid(format!(
                "fit {} has only one outcome class in its training rows; use fewer folds or stratified folds",
                f.id
            )));
        }
        f.mean = m.features.iter().map(|w| w.mean).collect();
        f.sd = m.features.iter().map(|w| w.sd_population()).collect();
        f.state = if f.role == Role::Fixed && f.lambda_fixed.is_none() {
            FitState::Waiting
        } else {
            f.null_state()
        };
        Ok(())
    }

    fn apply_irls(&mut self, i: usize, q: Quad) -> Result<()> {
        let (mut k, mut beta0, mut beta, prev, mut iter, mut halvings) = match &self.fits[i].state {
            FitState::Irls {
                k,
                beta0,
                beta,
                prev,
                iter,
                halvings,
            } => (*k, *beta0, beta.clone(), prev.clone(), *iter, *halvings),
            _ => return Ok(()),
        };
        {
            let f = &mut self.fits[i];
            f.last_grad = q.rx.iter().map(|r| r.abs() / q.v).collect();
            if f.forced.is_empty() {
                f.forced = vec![false; q.rx.len()];
            }
            // Whatever happens below, the step that led here has been judged; a reuse needs a
            // new small step recorded by this round.
            f.last_step = None;
            if !q.reused && f.role != Role::Fixed {
                f.model_h = q.h.as_ref().map(|h| StoredHessian {
                    packed: crate::linalg::pack_upper(h),
                    known: q.known.clone(),
                });
            }
        }
        // A path fit's first evaluation is at the null model: the full fit's fixes λ_max and the
        // path. (Fixed-λ bootstrap fits start warm, not at the null model, and need no null loss.)
        if self.fits[i].null_loss.is_none() && self.fits[i].role != Role::Fixed {
            self.fits[i].null_loss = Some(q.loss);
            if self.fits[i].role == Role::Full {
                self.set_lambdas(i, &q);
            }
        }
        // The path may have been shortened this round (the group's full fit stopped).
        if k >= self.path_limit(i) {
            return Ok(());
        }
        // 1. Safeguard: halve the step if the objective went up.
        if let Some(pv) = &prev {
            let lam = self.lambda(i, k)?;
            let f_new = q.loss / q.v + lam * l1(&beta);
            let f_old = pv.loss / q.v + lam * l1(&pv.beta);
            if f_new > f_old + 1e-12 * f_old.abs().max(1.0) {
                halvings += 1;
                if halvings > 60 {
                    return Err(ModelsError::NotConverged {
                        what: format!("LASSO step halving (fit {})", self.fits[i].id),
                        iterations: 60,
                    });
                }
                beta0 = 0.5 * (pv.beta0 + beta0);
                for (b, o) in beta.iter_mut().zip(&pv.beta) {
                    *b = 0.5 * (*o + *b);
                }
                self.fits[i].state = FitState::Irls {
                    k,
                    beta0,
                    beta,
                    prev,
                    iter,
                    halvings,
                };
                return Ok(());
            }
        }
        // 2. Coordinate descent on this quadratic model. When λ_k converges, its solution is
        //    queued for an (exact, Hessian-free) evaluation in the next round and λ_{k+1}'s first
        //    step is taken right away from the same model, so each λ costs one round trip less
        //    than a re-expansion at the solution would. A negligible step reuses these sums as
        //    the solution's evaluation.
        //    Coordinates CD may move: non-constant features whose Hessian column was sent.
        let ju: Vec<bool> = self.fits[i]
            .sd
            .iter()
            .zip(&q.known)
            .map(|(&s, &kn)| s > 0.0 && kn)
            .collect();
        let h = q
            .h
            .as_ref()
            .ok_or_else(|| ModelsError::Invalid("IRLS step requested without Hessian".into()))?;
        loop {
            let lam = self.lambda(i, k)?;
            let solved = cd_solve(
                &q,
                beta0,
                &beta,
                lam,
                &ju,
                self.config.cd_tol,
                self.config.max_sweeps,
            );
            let (nb0, nb, _) = match solved {
                Ok(s) => s,
                // glmnet: coordinate descent that does not converge at λ_k (maxit passes) ends
                // the path before it ("solutions for larger lambdas returned"). It happens near
                // separation, where IRLS weights vanish and collinear features trade weight
                // ever more slowly.
                Err(ModelsError::NotConverged { .. }) if self.fits[i].role == Role::Fixed => {
                    // A bootstrap replicate has one λ and no path to truncate. Near separation
                    // (a resample duplicates the extreme rows) CD creeps: accept the point that
                    // meets a tolerance 1e8 looser (step² < 1e-12 in the scaled metric, i.e.
                    // coefficients settled to ~1e-6), by which its selected set is fixed.
                    cd_solve(
                        &q,
                        beta0,
                        &beta,
                        lam,
                        &ju,
                        self.config.cd_tol * 1e8,
                        self.config.max_sweeps,
                    )?
                }
                Err(ModelsError::NotConverged { .. }) if k > 0 => {
                    self.truncate_path(i, k, beta0, beta, iter, halvings);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            // Screened-out coordinates must satisfy KKT at the new point, else widen and repeat
            // from the same (already accepted) point.
            let viol = unknown_violators(&q, h, beta0, &beta, nb0, &nb, lam, &self.fits[i].sd);
            if !viol.is_empty() {
                let f = &mut self.fits[i];
                for j in viol {
                    f.forced[j] = true;
                }
                f.state = FitState::Irls {
                    k,
                    beta0,
                    beta,
                    prev: None,
                    iter,
                    halvings,
                };
                return Ok(());
            }
            let mut step: f64 = q.w0 / q.v * (nb0 - beta0).powi(2);
            for j in 0..nb.len() {
                step = step.max(h[[j, j]] / q.v * (nb[j] - beta[j]).powi(2));
            }
            if step < self.config.irls_tol {
                let f = &mut self.fits[i];
                f.solutions.truncate(k);
                f.solutions.push(Solution {
                    beta0: nb0,
                    beta: nb.clone(),
                    loss: None,
                    heldout: None,
                });
                if f.role == Role::Fixed {
                    f.state = FitState::Done;
                    return Ok(());
                }
                if step <= NEGLIGIBLE_STEP && f.pending.is_empty() {
                    if self.record_eval(i, k, &q) {
                        return Ok(());
                    }
                } else {
                    f.pending.push(PendingEval {
                        k,
                        beta0: nb0,
                        beta: nb.clone(),
                    });
                }
                k += 1;
                iter = 0;
                halvings = 0;
                if k >= self.path_limit(i) {
                    // only the pending evaluations remain
                    self.fits[i].state = FitState::Irls {
                        k,
                        beta0: nb0,
                        beta: nb,
                        prev: None,
                        iter,
                        halvings,
                    };
                    return Ok(());
                }
                continue;
            }
            iter += 1;
            if iter >= self.config.max_irls {
                // glmnet: non-convergence at this λ truncates the path before it.
                if k == 0 {
                    return Err(ModelsError::NotConverged {
                        what: format!("LASSO IRLS at the first λ (fit {})", self.fits[i].id),
                        iterations: self.config.max_irls,
                    });
                }
                self.truncate_path(i, k, nb0, nb, iter, halvings);
                return Ok(());
            }
            self.fits[i].last_step = Some(step);
            self.fits[i].state = FitState::Irls {
                k,
                beta0: nb0,
                beta: nb,
                prev: Some(Prev {
                    beta0,
                    beta,
                    loss: q.loss,
                }),
                iter,
                halvings: 0,
            };
            return Ok(());
        }
    }

    /// Ends fit `i`'s path before λ_k (glmnet's behaviour when λ_k does not converge): the
    /// solutions for larger λ stand; a full fit's path length limits its group's CV.
    fn truncate_path(
        &mut self,
        i: usize,
        k: usize,
        beta0: f64,
        beta: Vec<f64>,
        iter: usize,
        halvings: u32,
    ) {
        let f = &mut self.fits[i];
        f.truncated = true;
        f.truncated_at = Some(k);
        f.solutions.truncate(k);
        f.state = FitState::Irls {
            k,
            beta0,
            beta,
            prev: None,
            iter,
            halvings,
        };
        if f.role == Role::Full {
            let g = f.group.unwrap_or(0);
            self.groups[g].path_len = Some(k);
        }
    }

    /// Records the evaluation of solution `e`; applies glmnet's path-stopping rule to full fits.
    /// Returns true when the fit is finished.
    fn record_eval(&mut self, i: usize, e: usize, q: &Quad) -> bool {
        let (devmax, fdev, mnlam) = (self.config.devmax, self.config.fdev, self.config.mnlam);
        let f = &mut self.fits[i];
        if let Some(s) = f.solutions.get_mut(e) {
            s.loss = Some(q.loss);
            s.heldout = Some((q.heldout_w, q.heldout_dev));
        }
        if f.role == Role::Full {
            let null = f.null_loss.unwrap_or(q.loss);
            let dev = |s: &Solution| 1.0 - s.loss.unwrap_or(null) / null;
            let stop = e + 1 >= mnlam
                && e >= 1
                && (dev(&f.solutions[e]) > devmax
                    || dev(&f.solutions[e]) - dev(&f.solutions[e - 1]) < fdev);
            if stop {
                f.solutions.truncate(e + 1);
                f.state = FitState::Done;
                let g = f.group.unwrap_or(0);
                self.groups[g].path_len = Some(e + 1);
                return true;
            }
        }
        if e + 1 >= self.path_limit(i) {
            let f = &mut self.fits[i];
            f.solutions.truncate(e + 1);
            f.state = FitState::Done;
            if f.role == Role::Full {
                let g = f.group.unwrap_or(0);
                self.groups[g].path_len = Some(e + 1);
            }
            return true;
        }
        false
    }

    fn set_lambdas(&mut self, i: usize, q: &Quad) {
        let f = &self.fits[i];
        let p = self.config.n_features;
        let lmax = (0..p)
            .filter(|&j| f.sd[j] > 0.0)
            .map(|j| q.rx[j].abs() / q.v)
            .fold(0.0, f64::max);
        let ratio = self
            .config
            .lambda_min_ratio
            .unwrap_or(if f.sum_w >= p as f64 { 1e-4 } else { 1e-2 });
        let nl = self.config.nlambda;
        let lambdas = (0..nl)
            .map(|k| lmax * ratio.powf(k as f64 / (nl - 1) as f64))
            .collect();
        if let Some(g) = f.group {
            self.groups[g].lambdas = Some(lambdas);
        }
    }

    /// Marks fold fits done once their group's path length is known and covered, computes CV
    /// for finished groups, and starts fixed-λ bootstrap fits after the main CV.
    fn finish_groups(&mut self) -> Result<()> {
        for g in 0..self.groups.len() {
            if let Some(len) = self.groups[g].path_len {
                for &fi in &self.groups[g].folds {
                    let f = &mut self.fits[fi];
                    let evaluated = f
                        .solutions
                        .iter()
                        .take(len)
                        .take_while(|s| s.heldout.is_some())
                        .count();
                    if evaluated >= len {
                        f.solutions.truncate(len);
                        f.state = FitState::Done;
                    }
                }
            }
            let grp = &self.groups[g];
            let all_done = grp.path_len.is_some()
                && self.fits[grp.full].state == FitState::Done
                && grp
                    .folds
                    .iter()
                    .all(|&f| self.fits[f].state == FitState::Done);
            if all_done && grp.cv.is_none() {
                let cv = self.compute_cv(g)?;
                self.groups[g].cv = Some(cv);
            }
        }
        if !self.boot_started
            && let (Some(b), Some(cv)) = (self.config.bootstrap, self.groups[0].cv.as_ref())
        {
            let lam = match b.lambda {
                BootstrapLambda::MainLambdaMin => Some(cv.lambda_min),
                BootstrapLambda::MainLambda1se => Some(cv.lambda_1se),
                BootstrapLambda::PerReplicateCv => None,
            };
            self.boot_started = true;
            if let Some(l) = lam {
                // Warm start: the main fit's solution at this λ, on the original scale.
                let index = match b.lambda {
                    BootstrapLambda::MainLambda1se => cv.index_1se,
                    _ => cv.index_min,
                };
                let (b0o, bo) = to_original(
                    cv.path.beta0[index],
                    &cv.path.beta[index],
                    &cv.path.mean,
                    &cv.path.sd,
                );
                for f in self.fits.iter_mut().filter(|f| f.role == Role::Fixed) {
                    f.lambda_fixed = Some(l);
                    if f.state == FitState::Waiting {
                        f.state = f.warm_state(b0o, &bo);
                    }
                }
            }
        }
        Ok(())
    }

    fn compute_cv(&self, g: usize) -> Result<CvResult> {
        let grp = &self.groups[g];
        let len = grp.path_len.unwrap_or(0);
        let lambdas: Vec<f64> = grp
            .lambdas
            .as_ref()
            .map(|l| l[..len].to_vec())
            .unwrap_or_default();
        let full = &self.fits[grp.full];
        // per fold: weight and mean deviance per λ (last solution reused past a truncation)
        let mut folds: Vec<(f64, Vec<f64>)> = Vec::new();
        for &fi in &grp.folds {
            let f = &self.fits[fi];
            let sols: Vec<&Solution> = f.solutions.iter().filter(|s| s.heldout.is_some()).collect();
            let Some(last) = sols.last() else {
                return Err(ModelsError::NotConverged {
                    what: format!("CV fold fit {} (no converged λ)", f.id),
                    iterations: self.config.max_irls,
                });
            };
            let w = last.heldout.map_or(0.0, |h| h.0);
            if w <= 0.0 {
                continue; // empty held-out fold (possible in a bootstrap replicate)
            }
            let means = (0..len)
                .map(|k| sols.get(k).unwrap_or(last).heldout.map_or(0.0, |h| h.1) / w)
                .collect();
            folds.push((w, means));
        }
        if folds.len() < 2 {
            return Err(ModelsError::Invalid(
                "CV needs at least 2 non-empty held-out folds".into(),
            ));
        }
        let wsum: f64 = folds.iter().map(|f| f.0).sum();
        let kf = folds.len() as f64;
        let mut cvm = vec![0.0; len];
        let mut cvsd = vec![0.0; len];
        for k in 0..len {
            cvm[k] = folds.iter().map(|(w, m)| w * m[k]).sum::<f64>() / wsum;
            let var = folds
                .iter()
                .map(|(w, m)| w * (m[k] - cvm[k]).powi(2))
                .sum::<f64>()
                / wsum
                / (kf - 1.0);
            cvsd[k] = var.sqrt();
        }
        // λ decreasing along the path: the largest λ attaining the minimum is the first index.
        let min = cvm.iter().copied().fold(f64::INFINITY, f64::min);
        let index_min = cvm
            .iter()
            .position(|&c| c <= min)
            .ok_or_else(|| ModelsError::Invalid("empty CV curve".into()))?;
        let bound = cvm[index_min] + cvsd[index_min];
        let index_1se = cvm.iter().position(|&c| c <= bound).unwrap_or(index_min);
        let path = full.path_result(&lambdas);
        let selected_min = nonzero(&path.beta[index_min]);
        Ok(CvResult {
            lambda_min: lambdas[index_min],
            lambda_1se: lambdas[index_1se],
            lambdas,
            cvm,
            cvsd,
            index_min,
            index_1se,
            path,
            selected_min,
        })
    }

    /// The study result, once [`LassoDriver::is_done`].
    pub fn result(&self) -> Option<LassoResult> {
        if !self.is_done() {
            return None;
        }
        let cv = self.groups[0].cv.clone()?;
        let bootstrap = self.config.bootstrap.map(|b| {
            let p = self.config.n_features;
            let mut lambda_used = Vec::new();
            let mut betas = Vec::new();
            match b.lambda {
                BootstrapLambda::PerReplicateCv => {
                    for g in &self.groups[1..] {
                        if let Some(c) = &g.cv {
                            lambda_used.push(c.lambda_min);
                            betas.push(c.path.beta[c.index_min].clone());
                        }
                    }
                }
                _ => {
                    for f in self.fits.iter().filter(|f| f.role == Role::Fixed) {
                        lambda_used.push(f.lambda_fixed.unwrap_or(f64::NAN));
                        betas.push(
                            f.solutions
                                .first()
                                .map_or_else(|| vec![0.0; p], |s| s.beta.clone()),
                        );
                    }
                }
            }
            selection(b, lambda_used, betas, p)
        });
        Some(LassoResult {
            cv,
            bootstrap,
            rounds: self.rounds,
            fit_requests: self.fit_requests,
        })
    }
}

fn selection(
    b: BootstrapConfig,
    lambda_used: Vec<f64>,
    betas: Vec<Vec<f64>>,
    p: usize,
) -> BootstrapResult {
    let nb = betas.len().max(1) as f64;
    let selected: Vec<Vec<usize>> = betas.iter().map(|x| nonzero(x)).collect();
    let mut frequency = vec![0.0; p];
    let mut mean_abs_beta = vec![0.0; p];
    for (s, x) in selected.iter().zip(&betas) {
        for &j in s {
            frequency[j] += 1.0;
        }
        for j in 0..p {
            mean_abs_beta[j] += x[j].abs();
        }
    }
    for j in 0..p {
        frequency[j] /= nb;
        mean_abs_beta[j] /= nb;
    }
    let mut ranking: Vec<usize> = (0..p).collect();
    ranking.sort_by(|&a, &c| {
        frequency[c]
            .total_cmp(&frequency[a])
            .then(mean_abs_beta[c].total_cmp(&mean_abs_beta[a]))
            .then(a.cmp(&c))
    });
    let top_k = ranking.iter().take(b.top_k).copied().collect();
    BootstrapResult {
        replicates: b.replicates,
        lambda_used,
        selected,
        beta: betas,
        frequency,
        mean_abs_beta,
        ranking,
        top_k,
    }
}

fn nonzero(b: &[f64]) -> Vec<usize> {
    (0..b.len()).filter(|&j| b[j] != 0.0).collect()
}

fn mismatch(site: usize, k: usize, fit: u32) -> ModelsError {
    ModelsError::Invalid(format!(
        "site #{site} reply {k} does not match the request for fit {fit} (wrong order, kind or size)"
    ))
}

impl Fit {
    fn new(id: u32, weights: WeightSpec, role: Role, group: Option<usize>) -> Fit {
        Fit {
            id,
            weights,
            role,
            group,
            mean: Vec::new(),
            sd: Vec::new(),
            ybar: 0.0,
            sum_w: 0.0,
            null_loss: None,
            lambda_fixed: None,
            state: FitState::NeedMoments,
            solutions: Vec::new(),
            truncated: false,
            requests: 0,
            last_grad: Vec::new(),
            forced: Vec::new(),
            pending: Vec::new(),
            truncated_at: None,
            model_h: None,
            last_step: None,
            std_at_site: false,
        }
    }

    /// IRLS starts at the intercept-only model logit(ȳ), β = 0 (glmnet's start).
    fn null_state(&self) -> FitState {
        FitState::Irls {
            k: 0,
            beta0: (self.ybar / (1.0 - self.ybar)).ln(),
            beta: vec![0.0; self.mean.len()],
            prev: None,
            iter: 0,
            halvings: 0,
        }
    }

    /// IRLS starts at an original-scale solution (b0o, bo) expressed on this fit's own
    /// standardisation: β_j = bo_j·sd_j, β0 = b0o + Σ_j bo_j·mean_j (a feature constant in this
    /// fit keeps coefficient 0 and its constant contribution goes to the intercept).
    fn warm_state(&self, b0o: f64, bo: &[f64]) -> FitState {
        let beta: Vec<f64> = bo
            .iter()
            .zip(&self.sd)
            .map(|(b, s)| if *s > 0.0 { b * s } else { 0.0 })
            .collect();
        let beta0 = b0o + bo.iter().zip(&self.mean).map(|(b, m)| b * m).sum::<f64>();
        FitState::Irls {
            k: 0,
            beta0,
            beta,
            prev: None,
            iter: 0,
            halvings: 0,
        }
    }

    fn path_result(&self, lambdas: &[f64]) -> PathResult {
        let n = lambdas.len().min(self.solutions.len());
        let null = self.null_loss.unwrap_or(f64::NAN);
        let mut r = PathResult {
            lambdas: lambdas[..n].to_vec(),
            beta0: Vec::new(),
            beta: Vec::new(),
            beta0_original: Vec::new(),
            beta_original: Vec::new(),
            dev_ratio: Vec::new(),
            nzero: Vec::new(),
            null_deviance: 2.0 * null,
            mean: self.mean.clone(),
            sd: self.sd.clone(),
            sum_w: self.sum_w,
            converged: !self.truncated,
        };
        for s in &self.solutions[..n] {
            let (b0o, bo) = to_original(s.beta0, &s.beta, &self.mean, &self.sd);
            r.beta0.push(s.beta0);
            r.beta.push(s.beta.clone());
            r.beta0_original.push(b0o);
            r.beta_original.push(bo);
            r.dev_ratio
                .push(s.loss.map_or(f64::NAN, |l| 1.0 - l / null));
            r.nzero.push(nonzero(&s.beta).len());
        }
        r
    }
}

/// Standardised → original scale: β_j/sd_j and β0 − Σ_j β_j·mean_j/sd_j (0 for SD-0 features).
pub fn to_original(beta0: f64, beta: &[f64], mean: &[f64], sd: &[f64]) -> (f64, Vec<f64>) {
    let bo: Vec<f64> = beta
        .iter()
        .zip(sd)
        .map(|(b, s)| if *s > 0.0 { b / s } else { 0.0 })
        .collect();
    let b0 = beta0 - bo.iter().zip(mean).map(|(b, m)| b * m).sum::<f64>();
    (b0, bo)
}

/// Runs the whole federated protocol in memory over `sites` (in site order). Used by tests,
/// the simulator and the benchmark; the network layer does the same with messages.
pub fn run_lasso(
    config: &LassoConfig,
    sites: &[SiteData],
    max_params_per_row: f64,
) -> Result<LassoResult> {
    let mut d = LassoDriver::new(config.clone())?;
    // Each site's kept standardisations (used when the config sends them once).
    let mut kept = vec![KeptStandardisations::default(); sites.len()];
    while !d.is_done() {
        let req = d.next_requests();
        if req.is_empty() {
            return Err(ModelsError::Invalid(
                "LASSO driver stalled with no requests".into(),
            ));
        }
        let replies: Vec<Vec<FitSums>> = sites
            .iter()
            .zip(&mut kept)
            .map(|(s, k)| {
                if config.standardisation_once {
                    Ok(site_irls_sums_keeping(s, &req, max_params_per_row, k)?.0)
                } else {
                    site_irls_sums(s, &req, max_params_per_row)
                }
            })
            .collect::<Result<_>>()?;
        d.apply(&replies)?;
    }
    d.result()
        .ok_or_else(|| ModelsError::Invalid("LASSO driver finished without a result".into()))
}

/// All rows in one place, for the POOLED REFERENCE: features, outcome, fold schemes and the
/// site each row belongs to (only used to reproduce the sites' bootstrap draws, which are
/// stratified by site).
#[derive(Debug, Clone, PartialEq)]
pub struct PooledData {
    /// Features (n × p).
    pub x: Array2<f64>,
    /// Outcome 0/1.
    pub y: Vec<f64>,
    /// Fold id per row, per scheme.
    pub fold_schemes: Vec<Vec<u32>>,
    /// Site id per row.
    pub site_of_row: Vec<u64>,
}

impl PooledData {
    /// Gathers sites' rows in site order.
    pub fn from_sites(sites: &[SiteData]) -> PooledData {
        let p = sites.first().map_or(0, |s| s.x.ncols());
        let mut xs = Vec::new();
        let mut d = PooledData {
            x: Array2::zeros((0, p)),
            y: Vec::new(),
            fold_schemes: vec![Vec::new(); sites.first().map_or(0, |s| s.fold_schemes.len())],
            site_of_row: Vec::new(),
        };
        for s in sites {
            xs.extend(s.x.iter().copied());
            d.y.extend_from_slice(&s.y);
            for (a, b) in d.fold_schemes.iter_mut().zip(&s.fold_schemes) {
                a.extend_from_slice(b);
            }
            d.site_of_row
                .extend(std::iter::repeat_n(s.site_id, s.y.len()));
        }
        d.x = Array2::from_shape_vec((d.y.len(), p), xs).unwrap_or(d.x);
        d
    }

    /// Training and held-out weights of every row: the same rule as [`SiteData::weights`], with
    /// each site's bootstrap draw taken over that site's rows.
    pub fn weights(&self, spec: &WeightSpec) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = self.y.len();
        let mut v = vec![0.0; n];
        let mut h = vec![0.0; n];
        let mut ids: Vec<u64> = self.site_of_row.clone();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let rows: Vec<usize> = (0..n).filter(|&i| self.site_of_row[i] == id).collect();
            let sub = SiteData {
                site_id: id,
                x: Array2::zeros((rows.len(), 0)),
                y: rows.iter().map(|&i| self.y[i]).collect(),
                fold_schemes: self
                    .fold_schemes
                    .iter()
                    .map(|f| rows.iter().map(|&i| f[i]).collect())
                    .collect(),
            };
            let (sv, sh) = sub.weights(spec)?;
            for (k, &i) in rows.iter().enumerate() {
                v[i] = sv[k];
                h[i] = sh[k];
            }
        }
        Ok((v, h))
    }
}

/// POOLED REFERENCE: the same glmnet algorithm with every sum taken over all rows at once (one
/// pass over the pooled table, no per-site partial sums).
pub fn lasso_pooled(config: &LassoConfig, data: &PooledData) -> Result<LassoResult> {
    // The reference's single "site" keeps nothing and answers with the whole matrix: kept
    // standardisations and row bases are wire forms.
    let mut config = config.clone();
    config.standardisation_once = false;
    config.hessian_basis = false;
    let mut d = LassoDriver::new(config)?;
    while !d.is_done() {
        let req = d.next_requests();
        if req.is_empty() {
            return Err(ModelsError::Invalid(
                "LASSO driver stalled with no requests".into(),
            ));
        }
        let reply: Vec<FitSums> = req
            .iter()
            .map(|r| {
                let (v, h) = data.weights(&r.weights)?;
                sums_reference(data.x.view(), &data.y, &v, &h, r)
            })
            .collect::<Result<_>>()?;
        d.apply(&[reply])?;
    }
    d.result()
        .ok_or_else(|| ModelsError::Invalid("LASSO driver finished without a result".into()))
}

/// Largest KKT violation of a solution on the original scale, computed directly from the rows
/// (independent of the sums code): with x̃ standardised by the weighted mean and 1/V SD,
/// g_j = x̃_jᵀ v(y − p)/V must satisfy |g_j| ≤ λ when β_j = 0 and g_j = λ·sign(β_j) otherwise,
/// and the intercept score Σv(y − p)/V must be 0. Returns max violation.
pub fn kkt_violation(
    x: ArrayView2<f64>,
    y: &[f64],
    weights: &[f64],
    beta0_original: f64,
    beta_original: &[f64],
    lambda: f64,
) -> f64 {
    let (n, p) = x.dim();
    let v: f64 = weights.iter().sum();
    let mut viol: f64 = 0.0;
    let mut resid = vec![0.0; n];
    for i in 0..n {
        let eta = beta0_original + (0..p).map(|j| x[[i, j]] * beta_original[j]).sum::<f64>();
        resid[i] = weights[i] * (y[i] - sigmoid(eta));
    }
    viol = viol.max((resid.iter().sum::<f64>() / v).abs());
    for j in 0..p {
        let mean = (0..n).map(|i| weights[i] * x[[i, j]]).sum::<f64>() / v;
        let sd = ((0..n)
            .map(|i| weights[i] * (x[[i, j]] - mean).powi(2))
            .sum::<f64>()
            / v)
            .sqrt();
        if sd <= 0.0 {
            continue;
        }
        let g = (0..n)
            .map(|i| resid[i] * (x[[i, j]] - mean) / sd)
            .sum::<f64>()
            / v;
        let bj = beta_original[j] * sd;
        let e = if bj == 0.0 {
            (g.abs() - lambda).max(0.0)
        } else {
            (g - lambda * bj.signum()).abs()
        };
        viol = viol.max(e);
    }
    viol
}

/// glmnet objective (1/V)Σv[log(1+e^η) − yη] + λ‖β_std‖₁ of an original-scale solution.
pub fn lasso_objective(
    x: ArrayView2<f64>,
    y: &[f64],
    weights: &[f64],
    beta0_original: f64,
    beta_original: &[f64],
    lambda: f64,
) -> f64 {
    let (n, p) = x.dim();
    let v: f64 = weights.iter().sum();
    let mut loss = 0.0;
    for i in 0..n {
        let eta = beta0_original + (0..p).map(|j| x[[i, j]] * beta_original[j]).sum::<f64>();
        loss += weights[i] * (softplus(eta) - y[i] * eta);
    }
    let mut pen = 0.0;
    for j in 0..p {
        let mean = (0..n).map(|i| weights[i] * x[[i, j]]).sum::<f64>() / v;
        let sd = ((0..n)
            .map(|i| weights[i] * (x[[i, j]] - mean).powi(2))
            .sum::<f64>()
            / v)
            .sqrt();
        pen += (beta_original[j] * sd).abs();
    }
    loss / v + lambda * pen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn deviance_is_clamped_like_cv_glmnet() {
        let d = binomial_deviance(1.0, 0.0);
        assert!((d - (-2.0 * 1e-5f64.ln())).abs() < 1e-12);
        assert!((binomial_deviance(0.0, 0.25) + 2.0 * 0.75f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn original_scale_reproduces_the_linear_predictor() {
        let (mean, sd) = (vec![3.0, -1.0, 7.0], vec![2.0, 0.5, 0.0]);
        let (b0, b) = (0.3, vec![1.2, -0.4, 9.0]);
        let (o0, o) = to_original(b0, &b, &mean, &sd);
        let x = [4.5, 0.25, 7.0];
        let std: f64 = b0
            + (0..3)
                .map(|j| {
                    if sd[j] > 0.0 {
                        b[j] * (x[j] - mean[j]) / sd[j]
                    } else {
                        0.0
                    }
                })
                .sum::<f64>();
        let orig: f64 = o0 + (0..3).map(|j| o[j] * x[j]).sum::<f64>();
        assert!((std - orig).abs() < 1e-14);
        assert_eq!(o[2], 0.0);
    }

    /// The site kernel (blocked matrix products) and the pooled reference (row loop) compute
    /// the same sums: full packed Hessian, a column subset, gradient only; with held-out rows,
    /// bootstrap-like multiplicities, an SD-0 feature, and a fit with no training rows.
    #[test]
    fn site_kernel_equals_the_row_by_row_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (n, p) = (137, 21);
        let x = Array2::from_shape_fn((n, p), |(_, j)| {
            if j == 4 {
                3.0
            } else {
                rng.gen_range(-2.0..2.0) * (1.0 + j as f64)
            }
        });
        let y: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        let mean: Vec<f64> = (0..p).map(|j| 0.1 * j as f64).collect();
        let sd: Vec<f64> = (0..p)
            .map(|j| if j == 4 { 0.0 } else { 1.5 + j as f64 })
            .collect();
        let beta: Vec<f64> = (0..p).map(|j| if j % 4 == 1 { 0.3 } else { 0.0 }).collect();
        let weights: Vec<(Vec<f64>, Vec<f64>)> = vec![
            (vec![1.0; n], vec![0.0; n]),
            (
                (0..n).map(|i| if i % 5 == 2 { 0.0 } else { 1.0 }).collect(),
                (0..n).map(|i| if i % 5 == 2 { 1.0 } else { 0.0 }).collect(),
            ),
            ((0..n).map(|i| ((i * 7) % 4) as f64).collect(), vec![0.0; n]),
            (vec![0.0; n], vec![2.0; n]),
            // Six training rows (a small site): x̃ᵀWx̃ has rank 6 < |S| and is sent as its
            // low-rank factor.
            (
                (0..n)
                    .map(|i| {
                        if i % 23 == 1 {
                            1.0 + (i % 2) as f64
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                (0..n)
                    .map(|i| if i % 23 == 5 { 1.0 } else { 0.0 })
                    .collect(),
            ),
        ];
        let mut factored = 0;
        let col_sets = [None, Some(vec![0u32, 4, 7, 20]), Some(vec![])];
        for (v, h) in &weights {
            for (hessian, eval_only) in [(true, false), (false, false), (false, true)] {
                for cols in &col_sets {
                    let req = FitRequest {
                        fit_id: 3,
                        weights: WeightSpec::default(),
                        kind: RequestKind::Irls {
                            mean: mean.clone(),
                            sd: sd.clone(),
                            beta0: -0.2,
                            beta: beta.clone(),
                            hessian,
                            cols: cols.clone(),
                            eval_only,
                            basis: None,
                            send_basis: false,
                        },
                    };
                    let mut sc = Scratch::default();
                    let fast =
                        site_kernel(x.view(), &y, v, h, &req, None, None, f64::INFINITY, &mut sc)
                            .unwrap();
                    let slow = sums_reference(x.view(), &y, v, h, &req).unwrap();
                    let (FitSums::Irls(mut f), FitSums::Irls(r)) = (fast, slow) else {
                        panic!("IRLS sums expected");
                    };
                    // A factor is the matrix's own, single precision, and multiplies out to
                    // the requested form within its rounding (relative to the largest entry,
                    // a diagonal one: each value is a product of two f32-rounded factor rows).
                    let from_factor = !f.hess_factor.is_empty();
                    if from_factor {
                        factored += 1;
                        assert!(f.hess.is_empty());
                        assert!(f.hess_factor.len() < r.hess.len());
                        assert!(f.hess_factor.iter().all(|&x| f64::from(x as f32) == x));
                        f.expand_factor(p, cols.as_deref()).unwrap();
                    }
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
                    assert!(close(f.sum_w, r.sum_w) && close(f.loss, r.loss));
                    assert!(close(f.r0, r.r0) && close(f.w0, r.w0));
                    assert!(close(f.heldout_w, r.heldout_w));
                    assert!(close(f.heldout_dev, r.heldout_dev));
                    let vectors = if eval_only { 0 } else { p };
                    assert_eq!((f.rx.len(), f.wx.len()), (vectors, vectors));
                    assert_eq!((r.rx.len(), r.wx.len()), (vectors, vectors));
                    for (a, b) in f.rx.iter().chain(&f.wx).zip(r.rx.iter().chain(&r.wx)) {
                        assert!(close(*a, *b), "{a} vs {b}");
                    }
                    // x̃ᵀWx̃ is rounded to single precision at the site.
                    assert_eq!(f.hess.len(), r.hess.len());
                    let scale = r.hess.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                    for (a, b) in f.hess.iter().zip(&r.hess) {
                        if from_factor {
                            let tol = 6e-8 * b.abs() + 2.5e-7 * scale;
                            assert!((a - b).abs() <= tol, "{a} vs {b} (factor)");
                        } else {
                            assert_eq!(f64::from(*a as f32), *a);
                            assert!(
                                (a - b).abs() <= 6e-8 * b.abs() + 1e-12 * scale,
                                "{a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
        // The small site's whole matrix (rank 6 < 21 features); its 4-column block is
        // already smaller than a 21 × 6 factor and is sent as is.
        assert_eq!(factored, 1);
    }

    /// x̃ᵀWx̃ values that are all f32 are written as f32 (half the bytes) and read back bit for
    /// bit; a list with any value that is not an f32 (the pooled reference's) stays f64; the
    /// plain f64 list older states hold is still read.
    #[test]
    fn hessians_serialise_as_single_precision_exactly_when_they_are() {
        let sums = |hess: Vec<f64>| IrlsSums {
            fit_id: 1,
            sum_w: 2.0,
            loss: 0.5,
            r0: 0.1,
            rx: vec![0.2],
            w0: 0.3,
            wx: vec![0.4],
            hess,
            hess_factor: Vec::new(),
            hess_basis: Vec::new(),
            basis_r: Vec::new(),
            heldout_w: 0.0,
            heldout_dev: 0.0,
        };
        let single = sums(vec![f64::from(0.1f32), -3.0, f64::from(1e-30f32), 0.0]);
        let json = serde_json::to_string(&single).unwrap();
        assert!(json.contains("\"f32\""), "{json}");
        assert_eq!(serde_json::from_str::<IrlsSums>(&json).unwrap(), single);
        let double = sums(vec![0.1, 2.0]);
        let json = serde_json::to_string(&double).unwrap();
        assert!(!json.contains("f32"), "{json}");
        assert_eq!(serde_json::from_str::<IrlsSums>(&json).unwrap(), double);
        let empty = sums(vec![]);
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(serde_json::from_str::<IrlsSums>(&json).unwrap(), empty);
        let old = json.replace("\"hess\":[]", "\"hess\":[0.5,0.25]");
        assert_eq!(
            serde_json::from_str::<IrlsSums>(&old).unwrap().hess,
            vec![0.5, 0.25]
        );
        // As f64, f32(0.1) would be written 0.10000000149011612.
        let json = serde_json::to_string(&single).unwrap();
        assert!(json.contains("[0.1,-3.0,1e-30,0.0]"), "{json}");
    }

    /// The CD solution (with its exact active-set finish) satisfies the subproblem's KKT
    /// conditions: ∂_j + λ·sign(c_j) = 0 on the support, |∂_j| ≤ λ off it, ∂_0 = 0.
    #[test]
    fn coordinate_descent_solves_the_quadratic_subproblem() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, p) = (60, 7);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| {
                let z: f64 = rng.gen_range(-1.0..1.0);
                (0..p)
                    .map(|j| z * (j as f64 / 7.0) + rng.gen_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let w: Vec<f64> = (0..n).map(|_| rng.gen_range(0.05..0.25)).collect();
        let r: Vec<f64> = (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect();
        let mut q = Quad {
            v: n as f64,
            loss: 0.0,
            r0: r.iter().sum(),
            rx: (0..p)
                .map(|j| (0..n).map(|i| r[i] * x[i][j]).sum())
                .collect(),
            w0: w.iter().sum(),
            wx: (0..p)
                .map(|j| (0..n).map(|i| w[i] * x[i][j]).sum())
                .collect(),
            h: None,
            hcol: Vec::new(),
            reused: false,
            known: vec![true; p],
            heldout_w: 0.0,
            heldout_dev: 0.0,
        };
        let mut h = Array2::zeros((p, p));
        for j in 0..p {
            for k in 0..p {
                h[[j, k]] = (0..n).map(|i| w[i] * x[i][j] * x[i][k]).sum();
            }
        }
        q.h = Some(h.clone());
        q.finish_columns();
        let b: Vec<f64> = (0..p).map(|j| if j % 3 == 0 { 0.2 } else { 0.0 }).collect();
        for lambda in [0.001, 0.01, 0.05] {
            let (c0, c, _) = cd_solve(&q, 0.1, &b, lambda, &[true; 7], 1e-20, 100_000).unwrap();
            let d0 = c0 - 0.1;
            let grad = |j: usize| -> f64 {
                (-q.rx[j] + q.wx[j] * d0 + (0..p).map(|k| h[[j, k]] * (c[k] - b[k])).sum::<f64>())
                    / q.v
            };
            let g0 =
                (-q.r0 + q.w0 * d0 + (0..p).map(|k| q.wx[k] * (c[k] - b[k])).sum::<f64>()) / q.v;
            assert!(g0.abs() < 1e-12, "intercept gradient {g0:e}");
            for j in 0..p {
                let g = grad(j);
                if c[j] == 0.0 {
                    assert!(
                        g.abs() <= lambda * (1.0 + 1e-9),
                        "λ={lambda} j={j}: |{g}| > λ"
                    );
                } else {
                    assert!(
                        (g + lambda * c[j].signum()).abs() < 1e-12,
                        "λ={lambda} j={j}: {g}"
                    );
                }
            }
        }
    }
}
