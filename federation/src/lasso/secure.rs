//! Secure aggregation of the LASSO's summed statistics (`secure_aggregation = true` in a
//! `kind = "lasso"` study, and the pipeline study's LASSO stage): how a site's per-fit sums are
//! packed into one masked fixed-point vector ([`SumShape::LassoSums`],
//! [`SumShape::PipelineLasso`]) and how the aggregator unpacks their sum over sites.
//!
//! # What is summed, and in which form
//!
//! Every sum the LASSO driver combines across sites is a sum over rows, so the sum over sites
//! is all `models::lasso::LassoDriver` needs: under the pseudo-site
//! [`crate::secure::MASKED_SUM_SITE`] it sees one "site" holding every row, and runs unchanged.
//! Per fit of the round (in request order):
//!
//! - **moments round**: Σv, Σvy and, per feature j, Σv·x_j and Σv·x_j² — raw power sums, not
//!   the plain path's per-site (Σv, mean, M2), because Chan's merge of (mean, M2) is not a sum.
//!   The site converts its own Welford moments (Σv·x = w·mean, Σv·x² = M2 + w·mean²); the
//!   aggregator recovers mean = Σvx/V and M2 = Σvx² − V·mean² from the sums.
//! - **IRLS rounds**: Σv, the loss, Σr, Σw, Σh, Σh·deviance (six scalars), then x̃ᵀr and x̃ᵀw
//!   (p each) and x̃ᵀWx̃ in its **additive** form: the packed upper triangle, or the p × |S|
//!   block of the requested columns, or nothing (no Hessian requested). A site whose plain
//!   answer carries the low-rank factor form (not additive) expands it first
//!   ([`additive_hessian`], the one place the masked path takes x̃ᵀWx̃ from).
//!
//! # Fixed point and precision
//!
//! Two formats, chosen for what each value is:
//!
//! - **wide values** (the moments' power sums and the six IRLS scalars) travel in three ring
//!   elements: x = h·2^40 + m + l with h = round(x / 2^40) and m = round(x − h·2^40) integers
//!   (F = 0) and l ∈ [−½, ½] with [`WIDE_LOW_FRAC_BITS`] = 55 fractional bits. Every step of
//!   the split is exact in f64, so a site's value is represented to 2^−56 absolutely however
//!   large it is, up to |x| ≤ 2^95 per site (checked at the site; the limbs are sized for up to
//!   256 sites). Raw power sums need that range: Σv·x² of a radiomics energy feature (values up
//!   to ~4e9) over a hundred rows is ~1e21, beyond any single 64-bit fixed-point format with
//!   fractional bits; and they need the resolution, because the variance is a small difference
//!   of them (below). The decoded sum equals the exact sum of the sites' f64 values to
//!   `n_sites · 2^−56` plus the f64 rounding of the result (a few 2^−53 relative): double
//!   precision, in effect.
//! - **IRLS vectors** (x̃ᵀr, x̃ᵀw, x̃ᵀWx̃) with [`LASSO_FRAC_BITS`] = 32: within
//!   `n_sites · 2^−33` ≈ 1.2e−10 per site. They are bounded by the fit's weight V (on the
//!   fit's standardised scale Σv·x̃_j² = V, so |x̃ᵀr| ≤ V, |x̃ᵀWx̃| ≤ V/4), and each value is
//!   checked at the site against |x| ≤ 2^23 (≈ 8.4e6, i.e. sites of up to millions of rows).
//!   Relative to the gradient's scale V this is ~1e−12: far below the IRLS tolerance; it moves
//!   the coefficients by ~1e−8 relative (measured below).
//!
//! **Precision of the standardisation.** The variance is M2/V with M2 = Σvx² − (Σvx)²/V, a
//! difference that cancels when a feature's mean is large against its SD. With the wide
//! format the fixed point adds nothing measurable; what remains is f64's own cancellation, a
//! relative error of the variance of about `4·2^−53·(1 + mean²/var)` (the site's conversion
//! M2 + w·mean² and the aggregator's subtraction each round once), e.g. 3e−13 for a feature
//! whose mean is 40 SDs from 0 — the plain path's Welford/Chan merge avoids it and is exact to
//! ~1e−16. The SD's relative error is half the variance's. Centring with a public pre-round
//! value (a masked round for the pooled mean first) would remove that term at the cost of a
//! round trip; at these magnitudes it is not needed, and the pipeline's LASSO runs on z-scored
//! features (mean ≈ 0) anyway. Measured on the cohort example (`federation/tests/secure_lasso.rs`,
//! 10 features including the first-order energy and `original_glcm_Idmn`, mean/SD = 39): SDs
//! within 2e−13 of the plain run's (and of a two-pass SD over the pooled rows), λ values within
//! 2e−11, coefficients within 3e−8 relative (the IRLS tolerance, not the fixed point), CV
//! curve within 6e−12, the same features selected at λ.min and by the bootstrap.
//!
//! # Refusals
//!
//! A fit the site's parameters-per-row guard refuses has no sums to mask: the site answers the
//! masked round with a failure carrying the refusal (fit, parameters, rows, the site's limit,
//! and the fix), unmasked, so the study fails naming the site and the fit — as the plain path
//! fails it on a [`FitSums::Refused`] entry.

use crate::secure::{SecureError, SumShape};
use crate::task::ResultBody;
use learners::FitId;
use models::lasso::{FitRequest, FitSums, IrlsSums, MomentSums, RequestKind};
use models::linalg::packed_len;
use models::sampling::Refusal;
use models::standardize::WeightedMoments;
use secagg::{FixedPoint, Layout};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A wide value is split as h·2^WIDE_HIGH_BITS + m + l (h, m integers, |l| ≤ ½).
pub const WIDE_HIGH_BITS: i32 = 40;

/// Fractional bits of a wide value's low limb (|l| ≤ ½, so ≤ 2^54 units: safe for up to 256
/// sites, with room for |l| = ½ exactly).
pub const WIDE_LOW_FRAC_BITS: u32 = 55;

/// Fractional bits of the IRLS vectors (x̃ᵀr, x̃ᵀw, x̃ᵀWx̃).
pub const LASSO_FRAC_BITS: u32 = 32;

/// Largest high limb a site sends: 2^55 units, so that the sum over up to 256 sites cannot wrap.
const MAX_UNITS: f64 = (1u64 << 55) as f64;

/// A wide value's limbs `[h, m, l]` (x = h·2^40 + m + l, h and m integers, |l| ≤ ½), or `None`
/// when |x| is beyond the format's range (2^95) or NaN. Also used, through [`CountsAndWide`],
/// by the masked ComBat rounds (standalone and pipeline) and the pipeline's z-score round,
/// which need the same range.
pub(crate) fn wide_limbs(x: f64) -> Option<[f64; 3]> {
    let scale = 2f64.powi(WIDE_HIGH_BITS);
    // Exact: scaling by a power of two, rounding to an integer, and subtracting the nearest
    // multiple of 2^40 (resp. the nearest integer), whose difference is a multiple of x's
    // own ulp no larger than x.
    let h = (x / scale).round();
    // (NaN fails this test too.)
    if h.is_nan() || h.abs() > MAX_UNITS {
        return None;
    }
    let r = x - h * scale;
    let m = r.round();
    Some([h, m, r - m])
}

/// The value of summed limbs (the inverse of [`wide_limbs`] on a decoded sum).
pub(crate) fn wide_value(h: f64, m: f64, l: f64) -> f64 {
    // The integer limbs' sums are exact in f64 (|m| sums stay below 2^53); one rounding
    // for each addition.
    h * 2f64.powi(WIDE_HIGH_BITS) + (m + l)
}

/// Segment layout of a vector of exact counts followed by wide reals: the counts (F = 0), then
/// the reals' high, middle and low limbs. The one packing of ComBat's masked rounds (the
/// standalone study's [`SumShape::ComBatCrossProducts`] / [`SumShape::ComBatResiduals`] and the
/// pipeline's [`SumShape::PipelineComBat`], which concatenates its fits' parts segment by
/// segment) and of the pipeline's z-score round ([`SumShape::PipelineMoments`]).
pub(crate) fn counts_and_wide_layout(counts: usize, wide: usize) -> Layout {
    Layout::new()
        .with("counts", counts, FixedPoint::integer())
        .with("wide sums, high limbs", wide, FixedPoint::integer())
        .with("wide sums, middle limbs", wide, FixedPoint::integer())
        .with(
            "wide sums, low limbs",
            wide,
            FixedPoint::new(WIDE_LOW_FRAC_BITS).expect("a valid number of fractional bits"),
        )
}

/// Site side of [`counts_and_wide_layout`]: counts and wide reals pushed in layout order.
#[derive(Default)]
pub(crate) struct CountsAndWide {
    counts: Vec<f64>,
    high: Vec<f64>,
    middle: Vec<f64>,
    low: Vec<f64>,
}

impl CountsAndWide {
    pub(crate) fn count(&mut self, n: f64) {
        self.counts.push(n);
    }

    /// A real value split into its limbs; `which` names the statistic in the refusal of a value
    /// beyond the range (the value itself stays at the site: it is this site's own aggregate).
    pub(crate) fn wide(&mut self, x: f64, which: &str) -> Result<(), SecureError> {
        let [h, m, l] = wide_limbs(x).ok_or_else(|| {
            SecureError::Refused(format!(
                "a sum of {which} is outside the masked fixed-point range (|x| ≤ {:.1e}); rescale the feature columns (e.g. to other units) and submit the study again",
                MAX_UNITS * 2f64.powi(WIDE_HIGH_BITS)
            ))
        })?;
        self.high.push(h);
        self.middle.push(m);
        self.low.push(l);
        Ok(())
    }

    /// The parts in layout order.
    pub(crate) fn into_parts(self) -> Vec<Vec<f64>> {
        vec![self.counts, self.high, self.middle, self.low]
    }
}

/// Aggregator side of [`counts_and_wide_layout`]: the decoded sum's counts and wide reals
/// (limbs recombined by [`wide_value`]), checked against the expected lengths.
pub(crate) fn counts_and_wide_values(
    parts: &[Vec<f64>],
    counts: usize,
    wide: usize,
) -> Result<(Vec<f64>, Vec<f64>), SecureError> {
    match parts {
        [c, h, m, l] if c.len() == counts && [h.len(), m.len(), l.len()] == [wide; 3] => Ok((
            c.clone(),
            (0..wide).map(|i| wide_value(h[i], m[i], l[i])).collect(),
        )),
        _ => Err(SecureError::Shape(format!(
            "the decoded sum does not hold {counts} counts and {wide} wide values"
        ))),
    }
}

/// Which form of x̃ᵀWx̃ an IRLS fit's sums carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HessForm {
    /// No Hessian requested (an evaluation, or a step reusing the fit's stored x̃ᵀWx̃).
    None,
    /// The packed upper triangle, p(p+1)/2 values.
    Packed,
    /// The p × |S| block of these columns (row-major).
    Columns(Vec<u32>),
}

impl HessForm {
    fn len(&self, p: usize) -> usize {
        match self {
            HessForm::None => 0,
            HessForm::Packed => packed_len(p),
            HessForm::Columns(c) => p * c.len(),
        }
    }
}

/// What one fit of a LASSO round sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotKind {
    /// The standardisation round.
    Moments,
    /// An IRLS round with this form of x̃ᵀWx̃.
    Irls(HessForm),
}

/// One fit of a masked LASSO round, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LassoSlot {
    pub fit_id: u32,
    pub kind: SlotKind,
}

impl LassoSlot {
    /// Wide values (three ring elements each): Σv, Σvy and 2p power sums; or the six IRLS
    /// scalars.
    fn wide_len(&self, p: usize) -> usize {
        match &self.kind {
            SlotKind::Moments => 2 + 2 * p,
            SlotKind::Irls(_) => 6,
        }
    }

    /// IRLS vector values: x̃ᵀr, x̃ᵀw and x̃ᵀWx̃.
    fn vector_len(&self, p: usize) -> usize {
        match &self.kind {
            SlotKind::Moments => 0,
            SlotKind::Irls(h) => 2 * p + h.len(p),
        }
    }
}

/// The slots of a request list (what each fit's sums hold).
pub fn slots(requests: &[FitRequest]) -> Vec<LassoSlot> {
    requests
        .iter()
        .map(|r| LassoSlot {
            fit_id: r.fit_id,
            kind: match &r.kind {
                RequestKind::Moments => SlotKind::Moments,
                RequestKind::Irls { hessian: false, .. } => SlotKind::Irls(HessForm::None),
                RequestKind::Irls {
                    hessian: true,
                    cols: None,
                    ..
                } => SlotKind::Irls(HessForm::Packed),
                RequestKind::Irls {
                    hessian: true,
                    cols: Some(c),
                    ..
                } => SlotKind::Irls(HessForm::Columns(c.clone())),
            },
        })
        .collect()
}

/// The shape of a masked round of a `kind = "lasso"` study asking `requests` over `features`
/// features.
pub fn shape(features: usize, requests: &[FitRequest]) -> SumShape {
    SumShape::LassoSums {
        features,
        fits: slots(requests),
    }
}

/// The shape of a masked LASSO round of a pipeline study (per outer fit, its sub-fits'
/// requests).
pub fn pipeline_shape(features: usize, requests: &[(FitId, Vec<FitRequest>)]) -> SumShape {
    SumShape::PipelineLasso {
        features,
        fits: requests.iter().map(|(f, r)| (*f, slots(r))).collect(),
    }
}

fn all_slots(shape: &SumShape) -> (usize, Vec<&LassoSlot>) {
    match shape {
        SumShape::LassoSums { features, fits } => (*features, fits.iter().collect()),
        SumShape::PipelineLasso { features, fits } => {
            (*features, fits.iter().flat_map(|(_, s)| s.iter()).collect())
        }
        _ => (0, Vec::new()),
    }
}

/// Segment layout of a LASSO shape: the wide values' high, middle and low limbs, then the IRLS
/// vectors.
pub(crate) fn layout(shape: &SumShape) -> Layout {
    let (p, slots) = all_slots(shape);
    let wide: usize = slots.iter().map(|s| s.wide_len(p)).sum();
    let vectors: usize = slots.iter().map(|s| s.vector_len(p)).sum();
    let real = |f| FixedPoint::new(f).expect("a valid number of fractional bits");
    Layout::new()
        .with("LASSO sums, high limbs", wide, FixedPoint::integer())
        .with("LASSO sums, middle limbs", wide, FixedPoint::integer())
        .with("LASSO sums, low limbs", wide, real(WIDE_LOW_FRAC_BITS))
        .with("LASSO IRLS vectors", vectors, real(LASSO_FRAC_BITS))
}

/// The additive form of a site's x̃ᵀWx̃ for a masked round (the packed upper triangle, or the
/// block of the requested columns): the sums' own `hess` unless the site sent the low-rank
/// factor form, which is expanded ([`IrlsSums::expand_factor`]). The only place the masked path
/// reads x̃ᵀWx̃ from.
pub fn additive_hessian<'a>(
    s: &'a IrlsSums,
    p: usize,
    form: &HessForm,
) -> Result<Cow<'a, [f64]>, SecureError> {
    // A row-basis answer does not add up across sites: a masked round never asks for one.
    if !s.hess_basis.is_empty() || !s.basis_r.is_empty() {
        return Err(SecureError::Shape(format!(
            "x̃ᵀWx̃ of fit {} came in the site's row basis, which a masked sum cannot carry",
            s.fit_id
        )));
    }
    if s.hess_factor.is_empty() {
        return Ok(Cow::Borrowed(&s.hess));
    }
    let cols = match form {
        HessForm::Columns(c) => Some(c.as_slice()),
        HessForm::Packed | HessForm::None => None,
    };
    let mut expanded = s.clone();
    expanded
        .expand_factor(p, cols)
        .map_err(|e| SecureError::Shape(format!("x̃ᵀWx̃ of fit {}: {e}", s.fit_id)))?;
    Ok(Cow::Owned(expanded.hess))
}

/// The failure text of a refused fit (`which` names the fit, e.g. "fit 3").
fn refusal(which: &str, r: &Refusal) -> SecureError {
    SecureError::Refused(format!(
        "refused {which}: {} parameters for {} rows exceeds this site's max_params_per_row = {}; use fewer features or ask the site to relax its policy",
        r.params, r.rows, r.max_params_per_row
    ))
}

/// The four parts of the masked vector, filled fit by fit.
#[derive(Default)]
struct Packer {
    high: Vec<f64>,
    middle: Vec<f64>,
    low: Vec<f64>,
    vectors: Vec<f64>,
}

impl Packer {
    fn wide(&mut self, x: f64, what: &str) -> Result<(), SecureError> {
        let [h, m, l] =
            wide_limbs(x).ok_or_else(|| too_large(what, MAX_UNITS * 2f64.powi(WIDE_HIGH_BITS)))?;
        self.high.push(h);
        self.middle.push(m);
        self.low.push(l);
        Ok(())
    }

    fn vector(&mut self, xs: &[f64], what: &str) -> Result<(), SecureError> {
        let limit = MAX_UNITS / (1u64 << LASSO_FRAC_BITS) as f64;
        if xs.iter().any(|x| x.is_nan() || x.abs() > limit) {
            return Err(too_large(what, limit));
        }
        self.vectors.extend_from_slice(xs);
        Ok(())
    }

    fn pack(
        &mut self,
        p: usize,
        slot: &LassoSlot,
        sums: &FitSums,
        which: &str,
    ) -> Result<(), SecureError> {
        let mismatch = |what: &str| {
            SecureError::Shape(format!(
                "{which}: {what} does not match the round's LASSO shape"
            ))
        };
        match (&slot.kind, sums) {
            (_, FitSums::Refused(r)) => Err(refusal(which, r)),
            (SlotKind::Moments, FitSums::Moments(m)) => {
                if m.fit_id != slot.fit_id || m.features.len() != p {
                    return Err(mismatch("the moments"));
                }
                self.wide(m.sum_w, which)?;
                self.wide(m.sum_wy, which)?;
                for f in &m.features {
                    // Σv·x and Σv·x² from the site's own (Σv, mean, M2).
                    self.wide(f.w * f.mean, which)?;
                    self.wide(f.m2 + f.w * f.mean * f.mean, which)?;
                }
                Ok(())
            }
            (SlotKind::Irls(form), FitSums::Irls(s)) => {
                // An evaluation-only reply has no vectors; the masked layout keeps its place
                // (zeros), so the shape does not depend on the request's purpose.
                let zeros;
                let (rx, wx) =
                    if matches!(form, HessForm::None) && s.rx.is_empty() && s.wx.is_empty() {
                        zeros = vec![0.0; p];
                        (&zeros, &zeros)
                    } else {
                        (&s.rx, &s.wx)
                    };
                if s.fit_id != slot.fit_id || rx.len() != p || wx.len() != p {
                    return Err(mismatch("the IRLS sums"));
                }
                let hess = additive_hessian(s, p, form)?;
                if hess.len() != form.len(p) {
                    return Err(mismatch("x̃ᵀWx̃"));
                }
                for x in [s.sum_w, s.loss, s.r0, s.w0, s.heldout_w, s.heldout_dev] {
                    self.wide(x, which)?;
                }
                self.vector(rx, which)?;
                self.vector(wx, which)?;
                self.vector(&hess, which)
            }
            _ => Err(mismatch("the kind of sums")),
        }
    }
}

fn too_large(which: &str, limit: f64) -> SecureError {
    // The value itself stays at the site (it is an aggregate of this site alone).
    SecureError::Refused(format!(
        "a LASSO sum of {which} is outside the masked fixed-point range (|x| ≤ {limit:.1e}); rescale the feature columns (e.g. to other units) and submit the study again"
    ))
}

/// Site side: the parts of a LASSO answer in layout order.
pub(crate) fn encode(shape: &SumShape, result: &ResultBody) -> Result<Vec<Vec<f64>>, SecureError> {
    let mut packer = Packer::default();
    match (shape, result) {
        (SumShape::LassoSums { features, fits }, ResultBody::LassoSums(sums)) => {
            if sums.len() != fits.len() {
                return Err(SecureError::Shape(format!(
                    "{} LASSO sums for {} fits",
                    sums.len(),
                    fits.len()
                )));
            }
            for (slot, s) in fits.iter().zip(sums) {
                packer.pack(*features, slot, s, &format!("fit {}", slot.fit_id))?;
            }
        }
        (
            SumShape::PipelineLasso { features, fits },
            ResultBody::Pipeline(crate::pipeline::StageResult::Lasso(per_fit)),
        ) => {
            if per_fit.len() != fits.len() {
                return Err(SecureError::Shape(format!(
                    "LASSO sums of {} outer fits for {}",
                    per_fit.len(),
                    fits.len()
                )));
            }
            for ((id, slots), (got, sums)) in fits.iter().zip(per_fit) {
                if id != got || sums.len() != slots.len() {
                    return Err(SecureError::Shape(format!(
                        "the LASSO sums of outer fit (repeat {}, fold {}) do not match the round's shape",
                        id.repeat, id.fold
                    )));
                }
                for (slot, s) in slots.iter().zip(sums) {
                    let which = format!(
                        "the LASSO of fit (repeat {}, fold {}) (sub-fit {})",
                        id.repeat, id.fold, slot.fit_id
                    );
                    packer.pack(*features, slot, s, &which)?;
                }
            }
        }
        (_, other) => {
            return Err(SecureError::Shape(format!(
                "a {} answer to a masked LASSO round",
                other.kind()
            )));
        }
    }
    Ok(vec![packer.high, packer.middle, packer.low, packer.vectors])
}

/// Reads the decoded sum back fit by fit.
struct Unpacker<'a> {
    high: &'a [f64],
    middle: &'a [f64],
    low: &'a [f64],
    vectors: &'a [f64],
}

impl Unpacker<'_> {
    fn wide(&mut self) -> f64 {
        let (h, m, l) = (self.high[0], self.middle[0], self.low[0]);
        self.high = &self.high[1..];
        self.middle = &self.middle[1..];
        self.low = &self.low[1..];
        wide_value(h, m, l)
    }

    fn vector(&mut self, n: usize) -> Vec<f64> {
        let (head, tail) = self.vectors.split_at(n);
        self.vectors = tail;
        head.to_vec()
    }

    fn unpack(&mut self, p: usize, slot: &LassoSlot) -> FitSums {
        match &slot.kind {
            SlotKind::Moments => {
                let sum_w = self.wide();
                let sum_wy = self.wide();
                let features = (0..p)
                    .map(|_| {
                        let (s1, s2) = (self.wide(), self.wide());
                        let mean = if sum_w > 0.0 { s1 / sum_w } else { 0.0 };
                        WeightedMoments {
                            w: sum_w,
                            mean,
                            // M2 = Σvx² − V·mean² (≥ 0; rounding may leave a tiny negative).
                            m2: (s2 - s1 * mean).max(0.0),
                        }
                    })
                    .collect();
                FitSums::Moments(MomentSums {
                    fit_id: slot.fit_id,
                    sum_w,
                    sum_wy,
                    features,
                })
            }
            SlotKind::Irls(form) => {
                let [sum_w, loss, r0, w0, heldout_w, heldout_dev] = [(); 6].map(|()| self.wide());
                let rx = self.vector(p);
                let wx = self.vector(p);
                let hess = self.vector(form.len(p));
                FitSums::Irls(IrlsSums {
                    fit_id: slot.fit_id,
                    sum_w,
                    loss,
                    r0,
                    rx,
                    w0,
                    wx,
                    hess,
                    hess_factor: Vec::new(),
                    hess_basis: Vec::new(),
                    basis_r: Vec::new(),
                    heldout_w,
                    heldout_dev,
                })
            }
        }
    }
}

/// Aggregator side: the pooled LASSO answer from the decoded sum (parts in layout order).
pub(crate) fn decode(shape: &SumShape, parts: &[Vec<f64>]) -> Result<ResultBody, SecureError> {
    let [high, middle, low, vectors] = parts else {
        return Err(SecureError::Shape("four segments expected".into()));
    };
    let layout = layout(shape);
    let lens: Vec<usize> = layout.segments().iter().map(|s| s.len).collect();
    if lens != [high.len(), middle.len(), low.len(), vectors.len()] {
        return Err(SecureError::Shape(
            "the decoded LASSO sum does not match its shape".into(),
        ));
    }
    let mut u = Unpacker {
        high,
        middle,
        low,
        vectors,
    };
    match shape {
        SumShape::LassoSums { features, fits } => Ok(ResultBody::LassoSums(
            fits.iter().map(|s| u.unpack(*features, s)).collect(),
        )),
        SumShape::PipelineLasso { features, fits } => {
            Ok(ResultBody::Pipeline(crate::pipeline::StageResult::Lasso(
                fits.iter()
                    .map(|(id, slots)| {
                        (*id, slots.iter().map(|s| u.unpack(*features, s)).collect())
                    })
                    .collect(),
            )))
        }
        _ => Err(SecureError::Shape("not a LASSO shape".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wide split is exact and reaches the stated range; a value past it is refused without
    /// being quoted.
    #[test]
    fn wide_values_split_exactly_and_refuse_beyond_the_range_without_quoting_them() {
        let scale = 2f64.powi(WIDE_HIGH_BITS);
        for x in [
            0.0,
            -0.3,
            1e-12,
            0.5,
            -0.5,
            12_345.678_9,
            -(2f64.powi(39)) - 0.25,
            2f64.powi(40) + 0.5,
            3.6e9 * 3.6e9 * 100.0,
            -1.7e22,
            3.9e28,
        ] {
            let mut p = Packer::default();
            p.wide(x, "fit 0").unwrap();
            let (h, m, l) = (p.high[0], p.middle[0], p.low[0]);
            assert_eq!(h * scale + m + l, x, "{x}");
            assert!(l.abs() <= 0.5 && m.abs() <= scale / 2.0, "{x}: {m} {l}");
            assert_eq!((h.fract(), m.fract()), (0.0, 0.0));
            // Every limb fits its format for 256 sites (2^55 units).
            let f = FixedPoint::new(WIDE_LOW_FRAC_BITS).unwrap();
            for (v, fmt) in [
                (h, FixedPoint::integer()),
                (m, FixedPoint::integer()),
                (l, f),
            ] {
                fmt.encode(v, 256).unwrap();
            }
        }
        let mut p = Packer::default();
        let e = p.wide(4e29, "fit 7").unwrap_err().to_string();
        assert!(e.contains("fit 7") && e.contains("rescale"), "{e}");
        assert!(
            !e.contains("4e29") && !e.contains("400000000000000000"),
            "{e}"
        );
        assert!(p.wide(f64::NAN, "fit 7").is_err());
    }

    /// A masked round adds every site's x̃ᵀWx̃: an answer in a site's row basis, which does not
    /// add up across sites, is refused rather than summed as if it were the matrix.
    #[test]
    fn an_answer_in_a_row_basis_is_refused_for_a_masked_sum() {
        let s = IrlsSums {
            fit_id: 4,
            sum_w: 3.0,
            loss: 1.0,
            r0: 0.0,
            rx: vec![0.0; 2],
            w0: 0.5,
            wx: Vec::new(),
            hess: Vec::new(),
            hess_factor: Vec::new(),
            hess_basis: vec![1.0, 0.0, 1.0],
            basis_r: Vec::new(),
            heldout_w: 0.0,
            heldout_dev: 0.0,
        };
        let err = additive_hessian(&s, 2, &HessForm::Packed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row basis") && err.contains("fit 4"), "{err}");
    }
}
