//! Conversions of the secure-aggregation messages (`federation::secure`, `secagg` ↔ protobuf).
//!
//! Strict like the rest of the edge: a public key that is not 32 bytes, an unsorted or
//! duplicated participant list, a shape too large to address, or an inner request of a kind that
//! may not ride on a key or masked round is a typed error naming the field.

use crate::convert::ConvertError;
use crate::convert_combat as cc;
use crate::pb;
use federation::secure::SumShape;
use federation::task::{
    MaskedTask, ResultBody, SecureKeyResult, SecureKeysTask, Table1SummaryTask, TaskBody,
};
use secagg::{KeyAnnouncement, MaskedVector, RoundSpec};

/// Largest design column count and feature count a shape may name: the packed W'W of 2^20
/// columns already has 2^39 entries, far above any message the transport accepts, and the
/// bound keeps every size computation of the layout free of overflow.
const MAX_COLUMNS: u64 = 1 << 20;
const MAX_FEATURES: u64 = 1 << 24;

fn key32(field: &'static str, bytes: Vec<u8>) -> Result<[u8; 32], ConvertError> {
    let got = bytes.len();
    bytes.try_into().map_err(|_| ConvertError::Length {
        field,
        got,
        expected: 32,
    })
}

fn bounded(field: &'static str, v: u64, max: u64) -> Result<usize, ConvertError> {
    if v > max {
        return Err(ConvertError::Range { field, value: v });
    }
    Ok(v as usize)
}

fn summary_task_from(t: pb::Table1SummaryTask) -> Table1SummaryTask {
    Table1SummaryTask {
        continuous: t.continuous,
        categorical: t.categorical,
    }
}

fn summary_task_to(t: &Table1SummaryTask) -> pb::Table1SummaryTask {
    pb::Table1SummaryTask {
        continuous: t.continuous.clone(),
        categorical: t.categorical.clone(),
    }
}

pub(crate) fn keys_task_from(t: pb::SecureKeysTask) -> Result<SecureKeysTask, ConvertError> {
    use pb::secure_keys_task::Inner;
    Ok(SecureKeysTask {
        inner: match t.inner {
            None => None,
            Some(Inner::CombatLevels(c)) => {
                Some(Box::new(TaskBody::ComBatLevels(cc::task_from(c)?)))
            }
            Some(Inner::Table1Levels(s)) => {
                Some(Box::new(TaskBody::Table1Levels(summary_task_from(s))))
            }
        },
    })
}

pub(crate) fn keys_task_to(t: &SecureKeysTask) -> Result<pb::SecureKeysTask, ConvertError> {
    use pb::secure_keys_task::Inner;
    Ok(pb::SecureKeysTask {
        inner: match t.inner.as_deref() {
            None => None,
            Some(TaskBody::ComBatLevels(c)) => Some(Inner::CombatLevels(cc::task_to(c))),
            Some(TaskBody::Table1Levels(s)) => Some(Inner::Table1Levels(summary_task_to(s))),
            Some(_) => {
                return Err(ConvertError::Unsupported(
                    "only ComBat's and Table 1's levels requests ride on the key round",
                ));
            }
        },
    })
}

fn announcement_from(k: pb::KeyAnnouncement) -> Result<KeyAnnouncement, ConvertError> {
    if k.site_id.is_empty() {
        return Err(ConvertError::Missing("KeyAnnouncement.site_id"));
    }
    Ok(KeyAnnouncement {
        site_id: k.site_id,
        public_key: key32("KeyAnnouncement.public_key", k.public_key)?,
    })
}

fn attestation_from(
    a: pb::KeyAttestation,
) -> Result<federation::secure::KeyAttestation, ConvertError> {
    if a.site_id.is_empty() {
        return Err(ConvertError::Missing("KeyAttestation.site_id"));
    }
    let scheme = u16::try_from(a.scheme).map_err(|_| ConvertError::Range {
        field: "KeyAttestation.scheme",
        value: u64::from(a.scheme),
    })?;
    Ok(federation::secure::KeyAttestation {
        site_id: a.site_id,
        certificate: a.certificate,
        scheme,
        signature: a.signature,
    })
}

fn attestation_to(a: &federation::secure::KeyAttestation) -> pb::KeyAttestation {
    pb::KeyAttestation {
        site_id: a.site_id.clone(),
        certificate: a.certificate.clone(),
        scheme: u32::from(a.scheme),
        signature: a.signature.clone(),
    }
}

fn round_from(r: Option<pb::RoundSpec>) -> Result<RoundSpec, ConvertError> {
    let r = r.ok_or(ConvertError::Missing("MaskedTask.round"))?;
    let spec = RoundSpec {
        study_id: r.study_id,
        round_id: r.round_id,
        participants: r.participants,
    };
    // Every site must derive the same round digest: the list must already be sorted and unique.
    spec.validate().map_err(|e| ConvertError::Invalid {
        field: "MaskedTask.round.participants",
        reason: e.to_string(),
    })?;
    Ok(spec)
}

fn cross_products_shape_from(c: pb::ComBatCrossProductsShape) -> Result<SumShape, ConvertError> {
    Ok(SumShape::ComBatCrossProducts {
        columns: bounded("ComBatCrossProductsShape.columns", c.columns, MAX_COLUMNS)?,
        features: bounded(
            "ComBatCrossProductsShape.features",
            c.features,
            MAX_FEATURES,
        )?,
    })
}

fn residuals_shape_from(r: pb::ComBatResidualsShape) -> Result<SumShape, ConvertError> {
    Ok(SumShape::ComBatResiduals {
        features: bounded("ComBatResidualsShape.features", r.features, MAX_FEATURES)?,
    })
}

fn fit_id_from(f: pb::FitId) -> learners::FitId {
    learners::FitId {
        repeat: f.repeat,
        fold: f.fold,
    }
}

fn fit_id_to(f: &learners::FitId) -> pb::FitId {
    pb::FitId {
        repeat: f.repeat,
        fold: f.fold,
    }
}

/// `SumShape::PipelineComBat` from the wire: every fit names its id and one standalone ComBat
/// shape (cross-products or residuals), all of the same round.
fn pipeline_combat_shape_from(c: pb::PipelineComBatShape) -> Result<SumShape, ConvertError> {
    use pb::pipeline_com_bat_fit::Shape;
    let mut fits = Vec::with_capacity(c.fits.len());
    for f in c.fits {
        let fit = fit_id_from(
            f.fit
                .ok_or(ConvertError::Missing("PipelineComBatFit.fit"))?,
        );
        let inner = match f
            .shape
            .ok_or(ConvertError::Missing("PipelineComBatFit.shape"))?
        {
            Shape::CrossProducts(x) => cross_products_shape_from(x)?,
            Shape::Residuals(r) => residuals_shape_from(r)?,
        };
        fits.push((fit, inner));
    }
    let kinds = |x: &SumShape| matches!(x, SumShape::ComBatCrossProducts { .. });
    if fits.windows(2).any(|w| kinds(&w[0].1) != kinds(&w[1].1)) {
        return Err(ConvertError::Invalid {
            field: "PipelineComBatShape.fits",
            reason: "fits of one round mix cross-products and residuals".into(),
        });
    }
    Ok(SumShape::PipelineComBat { fits })
}

fn combat_fit_shape_to(s: &SumShape) -> Option<pb::pipeline_com_bat_fit::Shape> {
    use pb::pipeline_com_bat_fit::Shape;
    match s {
        SumShape::ComBatCrossProducts { columns, features } => {
            Some(Shape::CrossProducts(pb::ComBatCrossProductsShape {
                columns: *columns as u64,
                features: *features as u64,
            }))
        }
        SumShape::ComBatResiduals { features } => {
            Some(Shape::Residuals(pb::ComBatResidualsShape {
                features: *features as u64,
            }))
        }
        // Not a fit shape of a pipeline ComBat round: sent without one, refused on arrival.
        _ => None,
    }
}

fn shape_from(s: Option<pb::SumShape>) -> Result<SumShape, ConvertError> {
    use pb::sum_shape::Shape;
    Ok(
        match s
            .and_then(|s| s.shape)
            .ok_or(ConvertError::Missing("MaskedTask.shape"))?
        {
            Shape::CombatCrossProducts(c) => cross_products_shape_from(c)?,
            Shape::CombatResiduals(r) => residuals_shape_from(r)?,
            Shape::Table1Summary(t) => SumShape::Table1Summary {
                continuous: t.continuous,
                categorical: t
                    .categorical
                    .into_iter()
                    .map(|c| (c.variable, c.levels))
                    .collect(),
            },
            Shape::PipelineFit(f) => crate::convert_pipeline::fit_shape_from(f)?,
            Shape::PipelineScores(s) => SumShape::PipelineScores {
                bins: s.bins,
                clinical: s.clinical,
                min_count: s.min_count,
            },
            Shape::PipelineFollowUp(f) => crate::convert_pipeline_metrics::follow_up_shape_from(f)?,
            Shape::PipelineCombat(c) => pipeline_combat_shape_from(c)?,
            Shape::PipelineMoments(m) => SumShape::PipelineMoments {
                features: bounded("PipelineMomentsShape.features", m.features, MAX_FEATURES)?,
                fits: m.fits.into_iter().map(fit_id_from).collect(),
            },
            Shape::LassoSums(l) => crate::convert_secure_lasso::lasso_shape_from(l)?,
            Shape::PipelineLasso(l) => crate::convert_secure_lasso::pipeline_shape_from(l)?,
        },
    )
}

fn shape_to(s: &SumShape) -> pb::SumShape {
    use pb::sum_shape::Shape;
    pb::SumShape {
        shape: Some(match s {
            SumShape::ComBatCrossProducts { columns, features } => {
                Shape::CombatCrossProducts(pb::ComBatCrossProductsShape {
                    columns: *columns as u64,
                    features: *features as u64,
                })
            }
            SumShape::ComBatResiduals { features } => {
                Shape::CombatResiduals(pb::ComBatResidualsShape {
                    features: *features as u64,
                })
            }
            SumShape::Table1Summary {
                continuous,
                categorical,
            } => Shape::Table1Summary(pb::Table1SummaryShape {
                continuous: continuous.clone(),
                categorical: categorical
                    .iter()
                    .map(|(v, l)| pb::CategoricalLevels {
                        variable: v.clone(),
                        levels: l.clone(),
                    })
                    .collect(),
            }),
            SumShape::PipelineFit { .. } => {
                Shape::PipelineFit(crate::convert_pipeline::fit_shape_to(s))
            }
            SumShape::PipelineScores {
                bins,
                clinical,
                min_count,
            } => Shape::PipelineScores(pb::PipelineScoresShape {
                bins: *bins,
                clinical: *clinical,
                min_count: *min_count,
            }),
            SumShape::PipelineFollowUp(f) => {
                Shape::PipelineFollowUp(crate::convert_pipeline_metrics::follow_up_shape_to(f))
            }
            SumShape::PipelineComBat { fits } => Shape::PipelineCombat(pb::PipelineComBatShape {
                fits: fits
                    .iter()
                    .map(|(fit, inner)| pb::PipelineComBatFit {
                        fit: Some(fit_id_to(fit)),
                        shape: combat_fit_shape_to(inner),
                    })
                    .collect(),
            }),
            SumShape::PipelineMoments { features, fits } => {
                Shape::PipelineMoments(pb::PipelineMomentsShape {
                    features: *features as u64,
                    fits: fits.iter().map(fit_id_to).collect(),
                })
            }
            SumShape::LassoSums { features, fits } => {
                Shape::LassoSums(crate::convert_secure_lasso::lasso_shape_to(*features, fits))
            }
            SumShape::PipelineLasso { features, fits } => Shape::PipelineLasso(
                crate::convert_secure_lasso::pipeline_shape_to(*features, fits),
            ),
        }),
    }
}

pub(crate) fn masked_task_from(t: pb::MaskedTask) -> Result<MaskedTask, ConvertError> {
    use pb::masked_task::Inner;
    let inner = match t.inner.ok_or(ConvertError::Missing("MaskedTask.inner"))? {
        Inner::CombatCrossProducts(c) => TaskBody::ComBatCrossProducts(cc::task_from(c)?),
        Inner::CombatResiduals(c) => TaskBody::ComBatResiduals(cc::task_from(c)?),
        Inner::Table1Summary(s) => TaskBody::Table1Summary(summary_task_from(s)),
        Inner::LassoSums(l) => TaskBody::LassoSums(crate::convert_lasso::task_from(l)?),
        Inner::Pipeline(p) => {
            let task = crate::convert_pipeline::task_from(p)?;
            if !federation::pipeline::secure::has_masked_form(&task.stage) {
                return Err(ConvertError::Unsupported(
                    "only the pipeline's summed stages (ComBat sums, z-score, LASSO, meta-model, metrics) ride on a masked round",
                ));
            }
            TaskBody::Pipeline(task)
        }
    };
    Ok(MaskedTask {
        keys: t
            .keys
            .into_iter()
            .map(announcement_from)
            .collect::<Result<_, _>>()?,
        attestations: t
            .attestations
            .into_iter()
            .map(attestation_from)
            .collect::<Result<_, _>>()?,
        round: round_from(t.round)?,
        shape: shape_from(t.shape)?,
        inner: Box::new(inner),
    })
}

pub(crate) fn masked_task_to(t: &MaskedTask) -> Result<pb::MaskedTask, ConvertError> {
    use pb::masked_task::Inner;
    let inner = match &*t.inner {
        TaskBody::ComBatCrossProducts(c) => Inner::CombatCrossProducts(cc::task_to(c)),
        TaskBody::ComBatResiduals(c) => Inner::CombatResiduals(cc::task_to(c)),
        TaskBody::Table1Summary(s) => Inner::Table1Summary(summary_task_to(s)),
        TaskBody::LassoSums(l) => Inner::LassoSums(crate::convert_lasso::task_to(l)),
        TaskBody::Pipeline(p) if federation::pipeline::secure::has_masked_form(&p.stage) => {
            Inner::Pipeline(crate::convert_pipeline::task_to(p)?)
        }
        _ => {
            return Err(ConvertError::Unsupported(
                "only ComBat's cross-products and residuals, Table 1's summary, LASSO rounds and the pipeline's summed stages have a masked form",
            ));
        }
    };
    Ok(pb::MaskedTask {
        keys: t
            .keys
            .iter()
            .map(|k| pb::KeyAnnouncement {
                site_id: k.site_id.clone(),
                public_key: k.public_key.to_vec(),
            })
            .collect(),
        attestations: t.attestations.iter().map(attestation_to).collect(),
        round: Some(pb::RoundSpec {
            study_id: t.round.study_id.clone(),
            round_id: t.round.round_id,
            participants: t.round.participants.clone(),
        }),
        shape: Some(shape_to(&t.shape)),
        inner: Some(inner),
    })
}

pub(crate) fn table1_levels_from(l: pb::Table1Levels) -> Vec<Vec<String>> {
    l.variables.into_iter().map(|v| v.levels).collect()
}

pub(crate) fn table1_levels_to(l: &[Vec<String>]) -> pb::Table1Levels {
    pb::Table1Levels {
        variables: l
            .iter()
            .map(|v| pb::LevelList { levels: v.clone() })
            .collect(),
    }
}

pub(crate) fn key_result_from(k: pb::SecureKeyResult) -> Result<SecureKeyResult, ConvertError> {
    use pb::secure_key_result::Inner;
    Ok(SecureKeyResult {
        public_key: key32("SecureKeyResult.public_key", k.public_key)?,
        attestation: k.attestation.map(attestation_from).transpose()?,
        inner: k.inner.map(|i| {
            Box::new(match i {
                Inner::CombatLevels(l) => ResultBody::ComBatLevels(cc::levels_from(l)),
                Inner::Table1Levels(l) => ResultBody::Table1Levels(table1_levels_from(l)),
            })
        }),
    })
}

pub(crate) fn key_result_to(k: &SecureKeyResult) -> Result<pb::SecureKeyResult, ConvertError> {
    use pb::secure_key_result::Inner;
    Ok(pb::SecureKeyResult {
        public_key: k.public_key.to_vec(),
        attestation: k.attestation.as_ref().map(attestation_to),
        inner: match k.inner.as_deref() {
            None => None,
            Some(ResultBody::ComBatLevels(l)) => Some(Inner::CombatLevels(cc::levels_to(l))),
            Some(ResultBody::Table1Levels(l)) => Some(Inner::Table1Levels(table1_levels_to(l))),
            Some(_) => {
                return Err(ConvertError::Unsupported(
                    "only levels answers ride on the key round",
                ));
            }
        },
    })
}

pub(crate) fn masked_from(v: pb::MaskedVector) -> Result<MaskedVector, ConvertError> {
    if v.site_id.is_empty() {
        return Err(ConvertError::Missing("MaskedVector.site_id"));
    }
    if v.study_id.is_empty() {
        return Err(ConvertError::Missing("MaskedVector.study_id"));
    }
    Ok(MaskedVector {
        site_id: v.site_id,
        study_id: v.study_id,
        round_id: v.round_id,
        values: v.values,
    })
}

pub(crate) fn masked_to(v: &MaskedVector) -> pb::MaskedVector {
    pb::MaskedVector {
        site_id: v.site_id.clone(),
        study_id: v.study_id.clone(),
        round_id: v.round_id,
        values: v.values.clone(),
    }
}
