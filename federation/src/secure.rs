//! Secure aggregation wired into study rounds: the key round, masked rounds, and the packing of
//! summed statistics into fixed-point vectors (the cryptography itself is the `secagg` crate).
//!
//! # Flow (both halves)
//!
//! 1. **Key round.** The driver wraps its first task in [`TaskBody::SecureKeys`]: every site
//!    creates (or reuses, after a restart) an X25519 key pair for the study
//!    ([`secagg::SiteSession`], kept in the site's memory) and answers its public key with the
//!    answer to the inner, unsummed request (ComBat's levels, Table 1's levels). The key comes
//!    from the operating system's CSPRNG (`rand::rngs::OsRng`), the crate's only
//!    non-deterministic input. [`SecureRounds::on_key_round`] records the announcements,
//!    labelling each key with the sender's id as the engine knows it (from its certificate), so
//!    no site can announce for another; in its first masked round a site learns its own id as
//!    the one the relayed set lists with its key, and its session is bound to it. A site with
//!    certificate access (the agent: [`SiteSessions::set_attestor`]) signs its announcement
//!    ([`announcement_message`], [`KeyAttestation`]) and, before masking, checks every relayed
//!    key it has not pinned yet against the signature of the site it is relayed for, so an
//!    aggregator that substitutes a key is refused; the signatures travel with the masked
//!    tasks until the first masked sum has opened (every key is pinned at every site by then).
//! 2. **Masked rounds.** [`SecureRounds::masked`] wraps a summed request in [`TaskBody::Masked`]
//!    with the relayed key set, a fresh round id, the sorted participant set and the
//!    [`SumShape`]. The site computes the plain answer through the usual gate (policy, min_count
//!    suppression, differencing guard), packs it with [`SumShape::encode`] into fixed point over
//!    Z/2^64 and masks it ([`secagg::SiteSession::mask_values`]: for every peer, the ChaCha20
//!    stream of the pair's HKDF-derived round seed is added or subtracted).
//!    [`SecureRounds::open_sum`] adds the masked vectors (wrapping), the masks cancel, and the
//!    driver receives **only the sum**, decoded back into the same result type
//!    ([`SumShape::decode`]) under the pseudo-site [`MASKED_SUM_SITE`]. The analysis code then
//!    runs unchanged, because every summed round's aggregation is itself a sum.
//!
//! # Precision
//!
//! Counts travel with F = 0 fractional bits and are exact. Table 1's real values travel with
//! [`REAL_FRAC_BITS`] = 24: each decoded sum is within `n_sites · 2^−25` (≈ 3e−8 per site) of
//! the exact sum of the sites' f64 values; per value `|x| ≤ 2^39 / n_sites` (≈ 1.8e11 for 3
//! sites) is enforced at the site, which refuses with a message to rescale otherwise. ComBat's
//! real sums (W'W, W'Y, residual sums; the standalone study's [`SumShape::ComBatCrossProducts`]
//! and [`SumShape::ComBatResiduals`] and the pipeline's [`SumShape::PipelineComBat`], one packer
//! for both: `crate::lasso::secure::CountsAndWide`) travel in the LASSO's wide three-limb
//! format: to 2^−56 per site (then one f64 rounding of the recombined sum) for any per-site
//! `|x| ≤ 2^95` (≈ 4e28), so the cohort's energy features (residual sums ~2e19, beyond the
//! 24-bit range 2^39 / 7 ≈ 7.9e10 for 7 sites) fit, and small ones (JointEnergy, residual sums
//! ~1e−3) lose nothing beyond f64's own rounding. A secure harmonize study then equals the
//! plain run up to f64's order of additions: on the 7-site cohort example with both energy
//! features, ComBat's parameters within 3.4e−12 relative (a covariate coefficient of B, where
//! the order of additions meets cancellation; the rest closer) and harmonised values within
//! 1.2e−13 relative, 1.3e−14 of the feature's pooled SD (`tests/secure_harmonize_wide.rs`,
//! bound 1e−11). The pipeline's meta-model sums use 32 fractional bits, the LASSO's the wide
//! format, see below.
//!
//! # What the aggregator learns
//!
//! With secure aggregation: per masked round, the sum over all sites of the statistics, the
//! number of sites that suppressed each Table 1 cell (not which), and each site's public key
//! (in LASSO rounds: the pooled moments and IRLS sums per fit, no site's own). Without it:
//! every site's own statistics. Unsummed rounds (ComBat's levels and per-batch
//! estimates, Table 1's level names and histogram refinements) stay plain in both modes.
//!
//! Pipeline studies ([`SumShape::PipelineFit`], [`SumShape::PipelineScores`], packed in
//! `crate::pipeline::secure`): the MLP's loss/gradient sums and the clinical IRLS sums travel
//! with [`PIPELINE_FRAC_BITS`] = 32 fractional bits (sums within `n_sites · 2^−33`); the score
//! count tables travel **unmerged**, one entry per bin, and the aggregator merges the pooled
//! table to `analysis.metrics.secure_min_count` — merging at each site first would give tables
//! of site-dependent cells that cannot be added. The aggregator therefore learns the pooled
//! per-bin table (small pooled bins included) but no site's own table; see that module for the
//! full statement. ComBat's cross-products and residuals and the z-score moments
//! ([`SumShape::PipelineComBat`], [`SumShape::PipelineMoments`]): one vector per site covering
//! every outer fit, each fit packed by the standalone ComBat packers, counts exact, reals
//! (and the z-score's raw power sums n, Σx, Σx²) in the LASSO's wide format below. The pipeline's
//! requests that are not sums (names, ComBat's per-batch estimates, base learners, relay,
//! scoring) stay plain.
//!
//! LASSO rounds ([`SumShape::LassoSums`] for a `kind = "lasso"` study, [`SumShape::PipelineLasso`]
//! for the pipeline's LASSO stage; packed in `crate::lasso::secure`): every round after the key
//! round is masked. The standardisation moments travel as raw power sums (Σv, Σvy, Σv·x,
//! Σv·x²: the plain path's (mean, M2) merge is not a sum) and, with the IRLS scalars, in a
//! three-limb **wide** fixed point (an integer high and middle limb and a low limb with 55
//! fractional bits: 2^−56 per site for any |x| ≤ 2^95, so Σv·x² of energy-sized features fits);
//! x̃ᵀr, x̃ᵀw and x̃ᵀWx̃ (always the additive packed or column form, never the low-rank factor)
//! with 32 fractional bits. The SDs then differ from the plain run's only by f64's cancellation
//! in Σvx² − (Σvx)²/V (2e−13 relative on the cohort example). A fit refused by the
//! parameters-per-row guard fails the round with the refusal in the clear
//! ([`SecureError::Refused`]), naming the site and the fit as the plain path does.
//!
//! # Dropout
//!
//! Rule: **restart without the site** ([`SecureRounds::restart_without`]), never mask recovery.
//! A partial sum is useless (the missing site's pads do not cancel), so the survivors re-mask
//! under a fresh round id; the dropped site is removed from every later masked round of the
//! study too. The round engine applies it when a masked round passes its deadline and the study
//! allows it (`on_masked_dropout = "continue_without_site"` in a pipeline, Table 1, harmonize
//! or LASSO study, at least 3 sites left; `crate::engine::StudyState::tick`): the restarted
//! round is a new engine round,
//! the site is left out of the rest of the study and named in the output (`engine::DroppedSite`,
//! the pipeline's `CvSummary::sites[].dropped` and a note in its metrics report), and its late
//! vector is refused (`EngineError::Dropped`), as are the survivors' answers to the abandoned
//! attempt (stale round), so nothing is counted twice. The pipeline's meta-model stage restarts
//! its optimisers over the survivors (their earlier iterations summed the dropped site's rows),
//! its LASSO stage every fit from its moments round (a new shape:
//! [`SecureRounds::restart_without_reshaped`]), a missed ComBat or z-score round the batch's
//! ComBat from its cross-products round with the survivors' designs; its score round is simply asked again. A Table 1
//! study restarts its masked summary round with a layout listing the survivors' levels only, a
//! ComBat study its cross-products round (round 1) with the design rebuilt from the survivors'
//! levels (a dropout in the residuals round too: the pooled B summed the site's rows), a
//! `kind = "lasso"` study every fit from its moments round; each then equals the run over the
//! survivors alone (`Table1Output`, `HarmonizeOutput` and `LassoOutput` name the dropped site;
//! tests: `tests/secure_dropout.rs`). Limitation: the survivors' vectors of the abandoned
//! attempt and the dropped site's late vector together open the abandoned sum; minus the
//! restarted sum, that is the dropped site's own statistics. The engine refuses and discards
//! them, so an aggregator that follows the protocol learns nothing more, but one that keeps the
//! bytes it was sent could (no double masking); hence the option is off by default and part of
//! the study hash the sites approve.
//! Otherwise — the default policy, fewer than 3 sites left, a restart the analysis cannot build
//! — a silent site pauses the study, plain or masked; when it
//! comes back it re-sends the identical masked vector (re-masking the same input under the same
//! round id is allowed and yields the same bytes; a different input is refused), so the round
//! completes.

use crate::ids::SiteId;
use crate::study::AnalysisSpec;
use crate::task::{
    CategoricalSummary, ContinuousSummary, GROUPS, GroupMoments, LevelCounts, MaskedTask, Released,
    ResultBody, SecureKeysTask, Table1SummaryResult, TaskBody,
};
use models::combat::{ComBatCrossProducts, ComBatResiduals};
use secagg::{FixedPoint, KeyAnnouncement, Layout, MaskedRound, RoundSpec, SecAggPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fractional bits for Table 1's real-valued statistics (resolution 2^−24 ≈ 6e−8). ComBat's
/// travel wide (`crate::lasso::secure::counts_and_wide_layout`).
pub const REAL_FRAC_BITS: u32 = 24;

/// The pseudo-site under which a masked round's sum reaches the analysis driver.
pub const MASKED_SUM_SITE: &str = "masked-sum";

fn real() -> FixedPoint {
    FixedPoint::new(REAL_FRAC_BITS).expect("24 is a valid number of fractional bits")
}

/// What a masked round sums and how it is packed; sent with the round so that every site and
/// the aggregator use one layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SumShape {
    /// ComBat round 1: `n` and the constant-in-batch flags (counts, F = 0), then W'W (packed
    /// upper triangle, `columns·(columns+1)/2`) and W'Y (`columns × features`, row-major) as
    /// wide reals: segments counts, high, middle, low limbs
    /// (`crate::lasso::secure::counts_and_wide_layout`).
    ComBatCrossProducts { columns: usize, features: usize },
    /// ComBat round 2: `n` (count), then the residual sums of squares per feature (wide reals,
    /// as in round 1).
    ComBatResiduals { features: usize },
    /// Table 1 summary: the cells of [`Table1SummaryResult`] for these continuous variables and
    /// these categorical variables with their level lists (the union over sites).
    Table1Summary {
        continuous: Vec<String>,
        categorical: Vec<(String, Vec<String>)>,
    },
    // --- Pipeline meta-model and metrics rounds (`crate::pipeline`) ---
    /// Pipeline meta-model + clinical round (`StageResult::Fit`): per MLP fit the row count
    /// (integer), then per fit the loss sum and the gradient sum (`mlp_weights` values); per
    /// clinical fit (with its global fit id) the row count, then Σv, the log-likelihood, the
    /// score (`clinical_params` values, intercept first) and the packed upper triangle of the
    /// information matrix. Reals with [`PIPELINE_FRAC_BITS`].
    PipelineFit {
        mlp_fits: Vec<learners::FitId>,
        mlp_weights: usize,
        clinical_fits: Vec<(learners::FitId, u32)>,
        clinical_params: usize,
    },
    /// Pipeline metrics, score round: per model (the stacked model, then the clinical comparator
    /// when `clinical`) every bin of the `bins`-bin grid **unmerged** (positives, negatives;
    /// Σp, Σ(p − y)²), plus the unscored count and one "withheld" flag per model. The merge to
    /// `min_count` happens on the sum (see [`SumShape::decode`]), not at the sites.
    PipelineScores {
        bins: u32,
        clinical: bool,
        min_count: u64,
    },
    /// Pipeline metrics, follow-up round: per bin of the score grid **unmerged**, the sums of the
    /// pooled clinical placement values over the bin's positives and negatives (merged to the
    /// pooled stacked-model cells on the sum), and per grouping, group and shared time-grid bin
    /// the event and censoring counts (merged to `min_count` on the sum); see
    /// `crate::pipeline::secure::FollowUpShape`.
    PipelineFollowUp(crate::pipeline::secure::FollowUpShape),
    /// The pipeline's masked ComBat rounds 1 (cross-products) and 2 (residuals): per outer fit
    /// (request order) that fit's standalone shape, [`SumShape::ComBatCrossProducts`] or
    /// [`SumShape::ComBatResiduals`], whose packer ([`SumShape::pack_combat`]) pushes each fit's
    /// counts and wide reals (W'W, W'Y, residual sums) into one vector: the fits' counts, then
    /// their reals' limbs, segment by segment (the cohort's energy features have residual sums
    /// ~2e19, beyond a 24-bit format's range). Packed in `crate::pipeline::secure`.
    PipelineComBat {
        fits: Vec<(learners::FitId, SumShape)>,
    },
    /// The pipeline's masked z-score round: per outer fit (request order) the row count, then
    /// per feature Σx and Σx² of the fit's harmonised training rows, wide.
    PipelineMoments {
        features: usize,
        fits: Vec<learners::FitId>,
    },
    // --- LASSO rounds (`crate::lasso::secure`) ---
    /// A LASSO round of a `kind = "lasso"` study: per fit (request order) the moments' power
    /// sums or the IRLS sums with x̃ᵀWx̃ in additive form, over `features` features; wide
    /// values in two limbs, IRLS vectors with [`crate::lasso::secure::LASSO_FRAC_BITS`].
    LassoSums {
        features: usize,
        fits: Vec<crate::lasso::secure::LassoSlot>,
    },
    /// The pipeline's LASSO stage: the same per outer fit, outer fits in request order.
    PipelineLasso {
        features: usize,
        fits: Vec<(learners::FitId, Vec<crate::lasso::secure::LassoSlot>)>,
    },
}

/// Fractional bits of the pipeline's real-valued sums (MLP loss and gradient, clinical IRLS):
/// resolution 2^−32 ≈ 2.3e−10, per value `|x| ≤ 2^31 / n_sites` (≈ 3e8 for 7 sites). More than
/// [`REAL_FRAC_BITS`] because the L-BFGS and Newton iterations divide these sums by the row
/// count and compare objective values across line-search steps.
pub const PIPELINE_FRAC_BITS: u32 = 32;

/// Why a result could not be packed or a sum unpacked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecureError {
    /// A relayed public key without a valid signature of the site it is relayed for (see
    /// [`KeyAttestor`]): the aggregator, or someone between it and the site, may have put its own
    /// key in the set.
    #[error(
        "secure aggregation: the public key relayed for site {site} is not signed by that site ({reason}); the relayed key may have been substituted, so this site refuses the masked round. Check the aggregator, and that every site runs a release that signs its key announcement"
    )]
    Unattested { site: String, reason: String },
    #[error(
        "the answer does not fit the masked round's layout: {0}; the aggregator and this site disagree on the study's shape"
    )]
    Shape(String),
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] secagg::SecAggError),
    #[error("secure aggregation: site {site} answered a masked round with {got}")]
    NotMasked { site: String, got: &'static str },
    #[error(
        "secure aggregation: no public key from site {0}; the key round must complete before a masked round"
    )]
    NoKey(String),
    /// The site's own guard refused the plain answer (e.g. the parameters-per-row guard on a
    /// clinical fit); the message names the rule and the fix, and the study fails with it.
    #[error("{0}")]
    Refused(String),
}

impl SumShape {
    /// Segment layout of the masked vector.
    pub fn layout(&self) -> Layout {
        match self {
            SumShape::ComBatCrossProducts { .. } | SumShape::ComBatResiduals { .. } => {
                let (counts, wide) = self.combat_lens().expect("a ComBat shape");
                crate::lasso::secure::counts_and_wide_layout(counts, wide)
            }
            SumShape::Table1Summary {
                continuous,
                categorical,
            } => {
                let cells = table1_cells(continuous.len(), categorical);
                Layout::new()
                    .with("counts", cells, FixedPoint::integer())
                    .with("suppressed flags", cells, FixedPoint::integer())
                    .with("moment sums", continuous.len() * GROUPS * 2, real())
            }
            SumShape::PipelineFit { .. }
            | SumShape::PipelineScores { .. }
            | SumShape::PipelineFollowUp(_) => crate::pipeline::secure::layout(self),
            SumShape::PipelineComBat { .. } | SumShape::PipelineMoments { .. } => {
                crate::pipeline::secure::combat_layout(self)
            }
            SumShape::LassoSums { .. } | SumShape::PipelineLasso { .. } => {
                crate::lasso::secure::layout(self)
            }
        }
    }

    /// Site side: the parts of `result` in layout order. Refuses a result of another kind or
    /// size, and a Table 1 level the shape does not list.
    pub fn encode(&self, result: &ResultBody) -> Result<Vec<Vec<f64>>, SecureError> {
        let shape = |m: String| SecureError::Shape(m);
        match (self, result) {
            (SumShape::ComBatCrossProducts { .. } | SumShape::ComBatResiduals { .. }, r) => {
                let mut packer = crate::lasso::secure::CountsAndWide::default();
                self.pack_combat(r, &mut packer, "the ComBat round")?;
                Ok(packer.into_parts())
            }
            (
                SumShape::Table1Summary {
                    continuous,
                    categorical,
                },
                ResultBody::Table1Summary(s),
            ) => encode_table1(continuous, categorical, s),
            (
                SumShape::PipelineFit { .. }
                | SumShape::PipelineScores { .. }
                | SumShape::PipelineFollowUp(_),
                r,
            ) => crate::pipeline::secure::encode(self, r),
            (SumShape::PipelineComBat { .. } | SumShape::PipelineMoments { .. }, r) => {
                crate::pipeline::secure::combat_encode(self, r)
            }
            (SumShape::LassoSums { .. } | SumShape::PipelineLasso { .. }, r) => {
                crate::lasso::secure::encode(self, r)
            }
            (_, other) => Err(shape(format!("a {} answer", other.kind()))),
        }
    }

    /// Aggregator side: the pooled result from the decoded sum (parts in layout order).
    pub fn decode(&self, parts: &[Vec<f64>]) -> Result<ResultBody, SecureError> {
        match self {
            SumShape::ComBatCrossProducts { .. } | SumShape::ComBatResiduals { .. } => {
                let (counts, wide) = self.combat_lens().expect("a ComBat shape");
                let (counts, wide) =
                    crate::lasso::secure::counts_and_wide_values(parts, counts, wide)?;
                self.unpack_combat(&counts, &wide)
            }
            SumShape::Table1Summary {
                continuous,
                categorical,
            } => decode_table1(continuous, categorical, parts),
            SumShape::PipelineFit { .. }
            | SumShape::PipelineScores { .. }
            | SumShape::PipelineFollowUp(_) => crate::pipeline::secure::decode(self, parts),
            SumShape::PipelineComBat { .. } | SumShape::PipelineMoments { .. } => {
                crate::pipeline::secure::combat_decode(self, parts)
            }
            SumShape::LassoSums { .. } | SumShape::PipelineLasso { .. } => {
                crate::lasso::secure::decode(self, parts)
            }
        }
    }
}

// --- ComBat rounds: one packing for the standalone study and the pipeline ---

impl SumShape {
    /// A ComBat shape's (counts, wide reals): round 1 `n` and the constant-in-batch flags, then
    /// W'W (packed upper triangle) and W'Y (row-major); round 2 `n`, then the residual sums of
    /// squares. `None` for the other shapes.
    pub(crate) fn combat_lens(&self) -> Option<(usize, usize)> {
        match self {
            SumShape::ComBatCrossProducts { columns, features } => Some((
                1 + features,
                columns * (columns + 1) / 2 + columns * features,
            )),
            SumShape::ComBatResiduals { features } => Some((1, *features)),
            _ => None,
        }
    }

    /// Site side: pushes a ComBat answer's counts and wide reals (in [`Self::combat_lens`]'s
    /// order) to `packer`, checking the sizes; `which` names the round (or the pipeline's fit) in
    /// a refusal. Used by [`SumShape::encode`] and by the pipeline's [`SumShape::PipelineComBat`].
    pub(crate) fn pack_combat(
        &self,
        result: &ResultBody,
        packer: &mut crate::lasso::secure::CountsAndWide,
        which: &str,
    ) -> Result<(), SecureError> {
        let shape = |m: String| SecureError::Shape(m);
        match (self, result) {
            (
                SumShape::ComBatCrossProducts { columns, features },
                ResultBody::ComBatCrossProducts(c),
            ) => {
                if c.wtw.len() != columns * (columns + 1) / 2
                    || c.wty.len() != columns * features
                    || c.constant_in_batch.len() != *features
                {
                    return Err(shape(format!(
                        "W'W/W'Y of {}/{} values for {columns} columns and {features} features",
                        c.wtw.len(),
                        c.wty.len()
                    )));
                }
                packer.count(c.n as f64);
                for &b in &c.constant_in_batch {
                    packer.count(f64::from(u8::from(b)));
                }
                for &x in &c.wtw {
                    packer.wide(x, &format!("W'W in {which}"))?;
                }
                for &x in &c.wty {
                    packer.wide(x, &format!("W'Y in {which}"))?;
                }
                Ok(())
            }
            (SumShape::ComBatResiduals { features }, ResultBody::ComBatResiduals(r)) => {
                if r.rss.len() != *features {
                    return Err(shape(format!(
                        "{} residual sums for {features} features",
                        r.rss.len()
                    )));
                }
                packer.count(r.n as f64);
                for &x in &r.rss {
                    packer.wide(x, &format!("squared residuals in {which}"))?;
                }
                Ok(())
            }
            (_, other) => Err(shape(format!(
                "a {} answer to a masked ComBat round",
                other.kind()
            ))),
        }
    }

    /// Aggregator side: the pooled ComBat answer from the summed counts and wide reals (exactly
    /// [`Self::combat_lens`] of each).
    pub(crate) fn unpack_combat(
        &self,
        counts: &[f64],
        wide: &[f64],
    ) -> Result<ResultBody, SecureError> {
        let count = |x: f64| x.max(0.0).round() as u64;
        if self.combat_lens() != Some((counts.len(), wide.len())) {
            return Err(SecureError::Shape(
                "the decoded ComBat sum does not match its shape".into(),
            ));
        }
        match self {
            SumShape::ComBatCrossProducts { columns, .. } => {
                let (wtw, wty) = wide.split_at(columns * (columns + 1) / 2);
                Ok(ResultBody::ComBatCrossProducts(ComBatCrossProducts {
                    n: count(counts[0]),
                    wtw: wtw.to_vec(),
                    wty: wty.to_vec(),
                    // Summed 0/1 flags: some site had a constant feature in a batch (the OR).
                    constant_in_batch: counts[1..].iter().map(|&c| c > 0.5).collect(),
                }))
            }
            _ => Ok(ResultBody::ComBatResiduals(ComBatResiduals {
                n: count(counts[0]),
                rss: wide.to_vec(),
            })),
        }
    }
}

/// Count cells of a Table 1 summary: group sizes (2), label missing (1); per continuous
/// variable: missing (2) and group n (2); per categorical variable: missing (2) and per level
/// the group counts (2).
fn table1_cells(continuous: usize, categorical: &[(String, Vec<String>)]) -> usize {
    GROUPS
        + 1
        + continuous * 2 * GROUPS
        + categorical
            .iter()
            .map(|(_, l)| GROUPS * (1 + l.len()))
            .sum::<usize>()
}

/// Pushes a released count: the count (0 when suppressed) and the 0/1 suppression flag.
fn push_count(counts: &mut Vec<f64>, flags: &mut Vec<f64>, c: &Released<u64>) {
    match c {
        Released::Value(v) => {
            counts.push(*v as f64);
            flags.push(0.0);
        }
        Released::Suppressed => {
            counts.push(0.0);
            flags.push(1.0);
        }
    }
}

fn encode_table1(
    continuous: &[String],
    categorical: &[(String, Vec<String>)],
    s: &Table1SummaryResult,
) -> Result<Vec<Vec<f64>>, SecureError> {
    let names_c: Vec<&String> = s.continuous.iter().map(|c| &c.variable).collect();
    let names_k: Vec<&String> = s.categorical.iter().map(|c| &c.variable).collect();
    if names_c != continuous.iter().collect::<Vec<_>>()
        || names_k != categorical.iter().map(|(n, _)| n).collect::<Vec<_>>()
    {
        return Err(SecureError::Shape(
            "the summary's variables differ from the round's".into(),
        ));
    }
    let (mut counts, mut flags, mut sums) = (Vec::new(), Vec::new(), Vec::new());
    for c in &s.group_n {
        push_count(&mut counts, &mut flags, c);
    }
    push_count(&mut counts, &mut flags, &s.label_missing);
    for c in &s.continuous {
        for m in &c.missing {
            push_count(&mut counts, &mut flags, m);
        }
        for g in &c.groups {
            match g {
                Released::Value(m) => {
                    push_count(&mut counts, &mut flags, &Released::Value(m.n));
                    // Σx and Σx² = M2 + n·mean² (the pooled mean and M2 follow from the sums).
                    let n = m.n as f64;
                    sums.push(n * m.mean);
                    sums.push(m.m2 + n * m.mean * m.mean);
                }
                Released::Suppressed => {
                    push_count(&mut counts, &mut flags, &Released::Suppressed);
                    sums.extend([0.0, 0.0]);
                }
            }
        }
    }
    for (c, (_, levels)) in s.categorical.iter().zip(categorical) {
        for m in &c.missing {
            push_count(&mut counts, &mut flags, m);
        }
        if let Some(l) = c.levels.iter().find(|l| !levels.contains(&l.level)) {
            return Err(SecureError::Shape(format!(
                "variable {:?} has level {:?} at this site, which the round's level list lacks",
                c.variable, l.level
            )));
        }
        for level in levels {
            match c.levels.iter().find(|l| &l.level == level) {
                Some(l) => l
                    .counts
                    .iter()
                    .for_each(|x| push_count(&mut counts, &mut flags, x)),
                None => {
                    for _ in 0..GROUPS {
                        push_count(&mut counts, &mut flags, &Released::Value(0));
                    }
                }
            }
        }
    }
    Ok(vec![counts, flags, sums])
}

fn decode_table1(
    continuous: &[String],
    categorical: &[(String, Vec<String>)],
    parts: &[Vec<f64>],
) -> Result<ResultBody, SecureError> {
    let [counts, flags, sums] = parts else {
        return Err(SecureError::Shape("three segments expected".into()));
    };
    let mut cell = 0usize;
    // A cell is released only if no site suppressed it (the flags' sum is 0), exactly as the
    // plain aggregation shows a cell any site suppressed as suppressed.
    let mut next = || {
        let i = cell;
        cell += 1;
        if flags[i] > 0.5 {
            Released::Suppressed
        } else {
            Released::Value(counts[i].max(0.0).round() as u64)
        }
    };
    let group_n = [next(), next()];
    let label_missing = next();
    let mut sum_i = 0usize;
    let mut out_c = Vec::new();
    for v in continuous {
        let missing = [next(), next()];
        let mut groups = [Released::Suppressed; GROUPS];
        for g in &mut groups {
            let (sx, sxx) = (sums[sum_i], sums[sum_i + 1]);
            sum_i += 2;
            *g = match next() {
                Released::Suppressed => Released::Suppressed,
                Released::Value(n) => {
                    let nf = n as f64;
                    let mean = if n == 0 { 0.0 } else { sx / nf };
                    let m2 = if n <= 1 {
                        0.0
                    } else {
                        (sxx - nf * mean * mean).max(0.0)
                    };
                    Released::Value(GroupMoments { n, mean, m2 })
                }
            };
        }
        out_c.push(ContinuousSummary {
            variable: v.clone(),
            groups,
            missing,
        });
    }
    let mut out_k = Vec::new();
    for (v, levels) in categorical {
        let missing = [next(), next()];
        let levels = levels
            .iter()
            .map(|l| LevelCounts {
                level: l.clone(),
                counts: [next(), next()],
            })
            .collect();
        out_k.push(CategoricalSummary {
            variable: v.clone(),
            levels,
            missing,
        });
    }
    Ok(ResultBody::Table1Summary(Table1SummaryResult {
        group_n,
        label_missing,
        continuous: out_c,
        categorical: out_k,
    }))
}

/// The label that binds a study's masks (the `study` of every [`RoundSpec`] and of the sites'
/// sessions): `analysis-` and the first 16 hex digits of SHA-256 over the analysis' canonical
/// JSON. Both halves compute it from the spec they hold (the drivers do not see the study id).
/// Pads are also bound to the per-study key pairs, so two studies with equal analyses never
/// share one.
pub fn session_label(analysis: &AnalysisSpec) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(analysis).expect("an analysis spec always serialises");
    format!(
        "analysis-{}",
        &hex::encode(Sha256::digest(json.as_bytes()))[..16]
    )
}

/// The aggregator's secure-aggregation state of one study (kept inside its analysis driver and
/// persisted with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureRounds {
    study: String,
    sites: Vec<SiteId>,
    keys: Vec<KeyAnnouncement>,
    /// Round id of the next masked exchange; never reused (restarts included).
    next_round_id: u64,
    /// The masked round being answered: its spec and shape.
    open: Option<(RoundSpec, SumShape)>,
    /// The sites' signatures over their announcements, relayed as they came (labelled with
    /// the sender's id; a signature naming another site is dropped).
    #[serde(default)]
    attestations: Vec<KeyAttestation>,
    /// Set once a masked sum has opened: every participant has then checked and pinned every
    /// key, so later masked rounds need not carry the signatures (a changed key is refused by
    /// the pin).
    #[serde(default)]
    attested: bool,
}

impl SecureRounds {
    /// State for the study whose analysis is `analysis`, over `sites` (sorted by the engine).
    pub fn new(analysis: &AnalysisSpec, sites: &[SiteId]) -> Self {
        Self {
            study: session_label(analysis),
            sites: sites.to_vec(),
            keys: Vec::new(),
            next_round_id: 1,
            open: None,
            attestations: Vec::new(),
            attested: false,
        }
    }

    /// The policy the aggregator applies (the sites apply theirs): at least 3 participants.
    pub fn policy() -> SecAggPolicy {
        SecAggPolicy::default()
    }

    /// The public keys announced in the key round.
    pub fn keys(&self) -> &[KeyAnnouncement] {
        &self.keys
    }

    /// Wraps the first tasks in the key round (`inner` may be empty: no inner request).
    pub fn key_round(&self, inner: BTreeMap<SiteId, TaskBody>) -> BTreeMap<SiteId, TaskBody> {
        self.sites
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    TaskBody::SecureKeys(SecureKeysTask {
                        inner: inner.get(s).cloned().map(Box::new),
                    }),
                )
            })
            .collect()
    }

    /// Records the key round's announcements and returns the inner answers (sites without an
    /// inner answer are left out).
    pub fn on_key_round(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<BTreeMap<SiteId, ResultBody>, String> {
        Self::policy()
            .check(self.sites.len())
            .map_err(|e| format!("secure aggregation: {e}"))?;
        let mut keys = Vec::new();
        let mut attestations = Vec::new();
        let mut inner = BTreeMap::new();
        for (site, body) in results {
            let ResultBody::SecureKey(k) = body else {
                return Err(format!(
                    "site {site} answered the key round with {}",
                    body.kind()
                ));
            };
            // Labelled with the sender's authenticated id: a site cannot announce for another.
            keys.push(KeyAnnouncement {
                site_id: site.to_string(),
                public_key: k.public_key,
            });
            // Relayed for the peers to check; only the sender's own signature is relayed.
            if let Some(a) = k
                .attestation
                .as_ref()
                .filter(|a| a.site_id == site.as_str())
            {
                attestations.push(a.clone());
            }
            if let Some(b) = &k.inner {
                inner.insert(site.clone(), (**b).clone());
            }
        }
        self.keys = keys;
        self.attestations = attestations;
        Ok(inner)
    }

    /// Wraps one summed request per site in a masked round over every site of the study.
    pub fn masked(
        &mut self,
        inner: BTreeMap<SiteId, TaskBody>,
        shape: SumShape,
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        let participants: Vec<String> = self.sites.iter().map(|s| s.to_string()).collect();
        self.masked_over(inner, shape, participants)
    }

    fn masked_over(
        &mut self,
        inner: BTreeMap<SiteId, TaskBody>,
        shape: SumShape,
        participants: Vec<String>,
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        for p in &participants {
            if !self.keys.iter().any(|k| &k.site_id == p) {
                return Err(SecureError::NoKey(p.clone()).to_string());
            }
        }
        let spec = RoundSpec::new(self.study.clone(), self.next_round_id, participants)
            .map_err(|e| format!("secure aggregation: {e}"))?;
        Self::policy()
            .check(spec.n())
            .map_err(|e| format!("secure aggregation: {e}"))?;
        self.next_round_id += 1;
        let tasks = inner
            .into_iter()
            .filter(|(s, _)| spec.contains(s.as_str()))
            .map(|(s, body)| {
                (
                    s,
                    TaskBody::Masked(MaskedTask {
                        keys: self.keys.clone(),
                        attestations: if self.attested {
                            Vec::new()
                        } else {
                            self.attestations.clone()
                        },
                        round: spec.clone(),
                        shape: shape.clone(),
                        inner: Box::new(body),
                    }),
                )
            })
            .collect();
        self.open = Some((spec, shape));
        Ok(tasks)
    }

    /// Restarts the open masked round without `dropped`: a fresh round id over the survivors,
    /// who re-mask their unchanged answers (`inner`: the survivors' requests). The partial sum
    /// of the abandoned attempt is discarded.
    pub fn restart_without(
        &mut self,
        dropped: &[SiteId],
        inner: BTreeMap<SiteId, TaskBody>,
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        let (spec, shape) = self
            .open
            .clone()
            .ok_or("secure aggregation: no masked round is open")?;
        let survivors: Vec<String> = spec
            .participants
            .iter()
            .filter(|p| !dropped.iter().any(|d| d.as_str() == p.as_str()))
            .cloned()
            .collect();
        let tasks = self.masked_over(inner, shape, survivors)?;
        // A dropped site takes no part in the study's later masked rounds either.
        self.sites.retain(|s| !dropped.contains(s));
        Ok(tasks)
    }

    /// [`SecureRounds::restart_without`] for a round whose requests start again with the
    /// restart (the pipeline's LASSO stage starts its fits again over the survivors): the
    /// survivors' new requests, packed with `shape`. The open round is left as it was if the
    /// restart cannot be built.
    pub fn restart_without_reshaped(
        &mut self,
        dropped: &[SiteId],
        inner: BTreeMap<SiteId, TaskBody>,
        shape: SumShape,
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        let (_, open_shape) = self
            .open
            .as_mut()
            .ok_or("secure aggregation: no masked round is open")?;
        let old = std::mem::replace(open_shape, shape);
        let restarted = self.restart_without(dropped, inner);
        if restarted.is_err()
            && let Some((_, s)) = self.open.as_mut()
        {
            *s = old;
        }
        restarted
    }

    /// Whether a masked round is waiting for its vectors.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Sums the open round's masked vectors and returns only the decoded sum, keyed by
    /// [`MASKED_SUM_SITE`]. Every participant must have answered with a masked vector.
    pub fn open_sum(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<BTreeMap<SiteId, ResultBody>, String> {
        let (spec, shape) = self
            .open
            .take()
            .ok_or("secure aggregation: a masked answer arrived but no masked round is open")?;
        let layout = shape.layout();
        let mut round = MaskedRound::new(spec, layout.total_len(), &Self::policy())
            .map_err(|e| SecureError::from(e).to_string())?;
        for (site, body) in results {
            let ResultBody::Masked(v) = body else {
                return Err(SecureError::NotMasked {
                    site: site.to_string(),
                    got: body.kind(),
                }
                .to_string());
            };
            if v.site_id != site.as_str() {
                return Err(format!(
                    "site {site} sent a masked vector labelled as site {:?}",
                    v.site_id
                ));
            }
            round
                .accept(v)
                .map_err(|e| SecureError::from(e).to_string())?;
        }
        let sum = round
            .complete()
            .map_err(|e| SecureError::from(e).to_string())?;
        let parts = layout
            .decode(&sum)
            .map_err(|e| SecureError::from(e).to_string())?;
        let pooled = shape.decode(&parts).map_err(|e| e.to_string())?;
        self.attested = true;
        Ok(BTreeMap::from([(
            SiteId::new(MASKED_SUM_SITE).expect("a valid site id"),
            pooled,
        )]))
    }
}

/// A site's signature over its key-round announcement, made with its certificate's private key
/// and relayed by the aggregator with the key, so that every peer can check that the key it is
/// handed for a site is the one that site announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttestation {
    /// The announcing site, as its certificate names it.
    pub site_id: String,
    /// The site's certificate (DER), issued by the consortium CA.
    #[serde(with = "bytes_hex")]
    pub certificate: Vec<u8>,
    /// The signature scheme as its TLS `SignatureScheme` code point (RFC 8446 §4.2.3; `0x0403`
    /// = ECDSA P-256 with SHA-256, the scheme of the certificates `certs` issues).
    pub scheme: u16,
    /// The signature over [`announcement_message`].
    #[serde(with = "bytes_hex")]
    pub signature: Vec<u8>,
}

mod bytes_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// What a site signs in the key round: `"fedrad/secagg/v1/key-announcement" ‖ lp(study hash) ‖
/// lp(site id) ‖ public key` (`lp` = 8-byte little-endian length, then the bytes), so that a
/// signature binds the key to one site and one study and cannot be replayed for another.
pub fn announcement_message(study_hash: &str, site_id: &str, public_key: &[u8; 32]) -> Vec<u8> {
    let mut m = b"fedrad/secagg/v1/key-announcement".to_vec();
    for part in [study_hash.as_bytes(), site_id.as_bytes()] {
        m.extend_from_slice(&(part.len() as u64).to_le_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(public_key);
    m
}

/// Signs this site's key announcements and checks its peers' (the site agent implements it
/// with its certificate, its key and the consortium CA: `site_agent::attest`). Pure code cannot
/// reach certificates, so it is handed in: [`SiteSessions::set_attestor`].
pub trait KeyAttestor: Send + Sync {
    /// The site id this site's certificate names.
    fn site_id(&self) -> &str;
    /// Signs `message` with this site's certificate key.
    fn attest(&self, message: &[u8]) -> Result<KeyAttestation, String>;
    /// Checks that `attestation` carries a certificate of the consortium, valid now, naming
    /// `attestation.site_id`, whose key signed `message`; the error says what failed.
    fn check(&self, attestation: &KeyAttestation, message: &[u8]) -> Result<(), String>;
}

/// A key generated in the key round, waiting for the first masked round to learn the site's
/// own id (the one the relayed set lists with this key).
#[derive(Clone, Serialize, Deserialize)]
struct PendingKey(#[serde(with = "secret_hex")] secagg::SiteSecret);

mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &secagg::SiteSecret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(zeroize::Zeroizing::new(v.to_bytes()).as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<secagg::SiteSecret, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_str(), bytes.as_mut())
            .map_err(|e| D::Error::custom(format!("a pending secure-aggregation key: {e}")))?;
        Ok(secagg::SiteSecret::from_bytes(*bytes))
    }
}

/// A site's secure-aggregation sessions, one per study (by study hash). Contains X25519
/// secrets: the agent stores the site memory with owner-only permissions.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SiteSessions {
    #[serde(default)]
    sessions: BTreeMap<String, secagg::SiteSession>,
    #[serde(default)]
    pending: BTreeMap<String, PendingKey>,
    #[serde(skip)]
    dirty: bool,
    /// Signs this site's announcements and checks its peers' (set by the agent). Without one
    /// (in-process runs) announcements go unsigned and relayed keys unchecked.
    #[serde(skip)]
    attestor: Option<std::sync::Arc<dyn KeyAttestor>>,
}

impl std::fmt::Debug for SiteSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteSessions")
            .field("sessions", &self.sessions)
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for SiteSessions {
    fn eq(&self, other: &Self) -> bool {
        self.sessions.len() == other.sessions.len()
            && self
                .sessions
                .iter()
                .zip(&other.sessions)
                .all(|((a, x), (b, y))| a == b && x.same_state(y))
            && self.pending.len() == other.pending.len()
            && self
                .pending
                .iter()
                .zip(&other.pending)
                .all(|((a, x), (b, y))| a == b && x.0.public_key() == y.0.public_key())
    }
}

impl SiteSessions {
    /// True (once) when a session changed since the last call (the agent persists it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Signs this site's key announcements and checks its peers' from now on.
    pub fn set_attestor(&mut self, attestor: std::sync::Arc<dyn KeyAttestor>) {
        self.attestor = Some(attestor);
    }

    /// The signature over this site's announcement of `public_key` in study `study_hash`, or
    /// `None` without an attestor.
    pub fn attest(
        &self,
        study_hash: &str,
        public_key: &[u8; 32],
    ) -> Result<Option<KeyAttestation>, String> {
        let Some(a) = &self.attestor else {
            return Ok(None);
        };
        a.attest(&announcement_message(study_hash, a.site_id(), public_key))
            .map(Some)
            .map_err(|e| format!("cannot sign this site's key announcement: {e}"))
    }

    /// With an attestor: every relayed key this site has not pinned yet must carry a valid
    /// signature of the site it is relayed for, and this site's own key must be listed under
    /// its own id. Keys pinned in an earlier (checked) round are held to the pin by `secagg`.
    fn check_attestations(&self, study_hash: &str, task: &MaskedTask) -> Result<(), SecureError> {
        let Some(attestor) = &self.attestor else {
            return Ok(());
        };
        let session = self.sessions.get(study_hash);
        let own = match (session, self.pending.get(study_hash)) {
            (Some(s), _) => s.public_key(),
            (None, Some(p)) => p.0.public_key(),
            // No key round answered: `mask` refuses with `NoKey`.
            (None, None) => return Ok(()),
        };
        let me = attestor.site_id();
        for k in &task.keys {
            let refuse = |reason: String| SecureError::Unattested {
                site: k.site_id.clone(),
                reason,
            };
            if k.site_id == me && k.public_key != own {
                return Err(refuse(format!(
                    "the key relayed under this site's own id {me:?} is not this site's key"
                )));
            }
            if k.public_key == own {
                if k.site_id != me {
                    return Err(refuse(format!(
                        "this site is {me:?} and its own key is listed as {:?}'s",
                        k.site_id
                    )));
                }
                continue;
            }
            if session.and_then(|s| s.peer_key(&k.site_id)) == Some(k.public_key) {
                continue;
            }
            let a = task
                .attestations
                .iter()
                .find(|a| a.site_id == k.site_id)
                .ok_or_else(|| refuse("no signature was relayed with it".into()))?;
            attestor
                .check(
                    a,
                    &announcement_message(study_hash, &k.site_id, &k.public_key),
                )
                .map_err(refuse)?;
        }
        Ok(())
    }

    /// The key round at the site: this study's public key (generated on first use, from the
    /// operating system's CSPRNG; the same key on a repeated key round).
    pub fn announce(&mut self, study_hash: &str) -> [u8; 32] {
        if let Some(s) = self.sessions.get(study_hash) {
            return s.public_key();
        }
        if let Some(p) = self.pending.get(study_hash) {
            return p.0.public_key();
        }
        let secret = secagg::SiteSecret::generate(&mut rand::rngs::OsRng);
        let public = secret.public_key();
        self.pending
            .insert(study_hash.to_string(), PendingKey(secret));
        self.dirty = true;
        public
    }

    /// A masked round at the site: pins the relayed keys, packs `plain` with the round's shape
    /// and masks it. In the study's first masked round the session is created, the site's own
    /// id being the one the relayed set lists with this site's public key.
    pub fn mask(
        &mut self,
        study_hash: &str,
        task: &MaskedTask,
        plain: &ResultBody,
    ) -> Result<secagg::MaskedVector, SecureError> {
        self.check_attestations(study_hash, task)?;
        if !self.sessions.contains_key(study_hash) {
            let pending = self.pending.get(study_hash).ok_or_else(|| {
                SecureError::NoKey("this site (it answered no key round for this study)".into())
            })?;
            let own = pending.0.public_key();
            let mut mine = task.keys.iter().filter(|k| k.public_key == own);
            let (Some(me), None) = (mine.next(), mine.next()) else {
                return Err(SecureError::Shape(
                    "the relayed key set does not list this site's public key exactly once".into(),
                ));
            };
            let session = secagg::SiteSession::new(
                task.round.study_id.clone(),
                me.site_id.clone(),
                pending.0.clone(),
                SecAggPolicy::default(),
            )?;
            self.sessions.insert(study_hash.to_string(), session);
            self.pending.remove(study_hash);
            self.dirty = true;
        }
        let session = self.sessions.get_mut(study_hash).expect("inserted above");
        session.accept_peer_keys(&task.keys)?;
        let parts = task.shape.encode(plain)?;
        let refs: Vec<&[f64]> = parts.iter().map(Vec::as_slice).collect();
        let v = session.mask_values(&task.round, &task.shape.layout(), &refs)?;
        self.dirty = true;
        Ok(v)
    }
}
