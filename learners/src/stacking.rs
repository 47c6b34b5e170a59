//! Stacking meta-features: a patient's value for a learner type is the training-size-weighted
//! mean of the probabilities of the available sites' models of that type; for the site's own
//! training rows its own model contributes its out-of-fold probability instead of an in-sample
//! prediction.
//!
//! `meta = Σ_s n_s·p_s(x) / Σ_s n_s` over the sites s holding a model of that type, summed in
//! site-id order (so the bits do not depend on the order models arrived in), with `n_s` the
//! number of outer training rows the model was fitted on.

use ndarray::{Array2, ArrayView2};

use crate::error::{LearnerError, Result};
use crate::model::LearnerKind;
use crate::plan::ProbabilisticModel;
use crate::site::{SharedModel, SiteModels};

/// Meta-feature matrix (rows × `kinds`) for rows `x` held by `own_site`.
///
/// - `models`: every model available at this site for this outer fit (its own included, if it
///   trained; others' if they share), at most one per (site, type).
/// - `own_training`: `Some(models)` when `x` are the site's own outer *training* rows, in the
///   order its OOF vectors are aligned with; then its own models contribute their OOF values.
///   `None` for validation rows (own model scores them like anyone else's).
pub fn meta_features(
    own_site: &str,
    x: ArrayView2<f64>,
    own_training: Option<&SiteModels>,
    models: &[SharedModel],
    kinds: &[LearnerKind],
) -> Result<Array2<f64>> {
    let mut sorted: Vec<&SharedModel> = models.iter().collect();
    sorted
        .sort_by(|a, b| (a.site.as_str(), a.model.kind()).cmp(&(b.site.as_str(), b.model.kind())));
    for w in sorted.windows(2) {
        if w[0].site == w[1].site && w[0].model.kind() == w[1].model.kind() {
            return Err(LearnerError::Protocol {
                what: "meta-features",
                detail: format!(
                    "two {} models from site {}",
                    w[0].model.kind().name(),
                    w[0].site
                ),
            });
        }
    }
    let mut out = Array2::zeros((x.nrows(), kinds.len()));
    for (c, &kind) in kinds.iter().enumerate() {
        let mut num = vec![0.0; x.nrows()];
        let mut den = 0.0;
        let mut any = false;
        for m in sorted.iter().filter(|m| m.model.kind() == kind) {
            let w = m.n_train as f64;
            let probs = match own_training {
                Some(own) if m.site == own_site => {
                    let oof = own.oof(kind).ok_or(LearnerError::Protocol {
                        what: "meta-features",
                        detail: format!(
                            "own site has a shared {} model but no OOF values for it",
                            kind.name()
                        ),
                    })?;
                    if oof.len() != x.nrows() {
                        return Err(LearnerError::LengthMismatch {
                            what: "meta-features (own OOF)",
                            rows: x.nrows(),
                            labels: oof.len(),
                        });
                    }
                    oof.to_vec()
                }
                _ => m.model.predict_proba(x)?,
            };
            for (a, p) in num.iter_mut().zip(probs) {
                *a += w * p;
            }
            den += w;
            any = true;
        }
        if !any || den <= 0.0 {
            return Err(LearnerError::NoModel { kind: kind.name() });
        }
        for (r, a) in num.iter().enumerate() {
            out[[r, c]] = a / den;
        }
    }
    Ok(out)
}
