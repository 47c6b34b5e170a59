//! Conversions of the LASSO's masked-round shapes (`federation::lasso::secure` ↔ protobuf):
//! [`SumShape::LassoSums`] and [`SumShape::PipelineLasso`].
//!
//! Strict like the rest of the edge: a slot that is both moments and IRLS, names Hessian
//! columns without a Hessian, is packed and lists columns, or names a column outside the
//! features, and a feature count too large to address, are typed errors naming the field.

use crate::convert::ConvertError;
use crate::pb;
use federation::lasso::secure::{HessForm, LassoSlot, SlotKind};
use federation::secure::SumShape;
use learners::FitId;

type Result<T> = std::result::Result<T, ConvertError>;

/// Largest feature count a LASSO shape may name: the packed x̃ᵀWx̃ of 2^20 features already has
/// 2^39 entries, far above any message the transport accepts, and the bound keeps the layout's
/// size arithmetic free of overflow.
const MAX_FEATURES: u64 = 1 << 20;

fn features_from(field: &'static str, v: u64) -> Result<usize> {
    if v > MAX_FEATURES {
        return Err(ConvertError::Range { field, value: v });
    }
    Ok(v as usize)
}

fn slot_to(s: &LassoSlot) -> pb::LassoSlot {
    let (moments, hessian, packed, columns) = match &s.kind {
        SlotKind::Moments => (true, false, false, vec![]),
        SlotKind::Irls(HessForm::None) => (false, false, false, vec![]),
        SlotKind::Irls(HessForm::Packed) => (false, true, true, vec![]),
        SlotKind::Irls(HessForm::Columns(c)) => (false, true, false, c.clone()),
    };
    pb::LassoSlot {
        fit_id: s.fit_id,
        moments,
        hessian,
        packed,
        columns,
    }
}

fn slot_from(s: pb::LassoSlot, features: usize) -> Result<LassoSlot> {
    let invalid = |reason: &str| ConvertError::Invalid {
        field: "LassoSlot",
        reason: reason.to_string(),
    };
    let kind = match (s.moments, s.hessian, s.packed, s.columns.is_empty()) {
        (true, false, false, true) => SlotKind::Moments,
        (true, ..) => return Err(invalid("a moments slot names a Hessian")),
        (false, false, false, true) => SlotKind::Irls(HessForm::None),
        (false, false, ..) => return Err(invalid("Hessian columns without a Hessian")),
        (false, true, true, true) => SlotKind::Irls(HessForm::Packed),
        (false, true, true, false) => return Err(invalid("a packed Hessian with columns")),
        (false, true, false, _) => {
            if let Some(&c) = s.columns.iter().find(|&&c| c as usize >= features) {
                return Err(ConvertError::Range {
                    field: "LassoSlot.columns",
                    value: u64::from(c),
                });
            }
            SlotKind::Irls(HessForm::Columns(s.columns))
        }
    };
    Ok(LassoSlot {
        fit_id: s.fit_id,
        kind,
    })
}

pub(crate) fn lasso_shape_to(features: usize, fits: &[LassoSlot]) -> pb::LassoSumsShape {
    pb::LassoSumsShape {
        features: features as u64,
        fits: fits.iter().map(slot_to).collect(),
    }
}

pub(crate) fn lasso_shape_from(s: pb::LassoSumsShape) -> Result<SumShape> {
    let features = features_from("LassoSumsShape.features", s.features)?;
    Ok(SumShape::LassoSums {
        features,
        fits: s
            .fits
            .into_iter()
            .map(|f| slot_from(f, features))
            .collect::<Result<_>>()?,
    })
}

pub(crate) fn pipeline_shape_to(
    features: usize,
    fits: &[(FitId, Vec<LassoSlot>)],
) -> pb::PipelineLassoShape {
    pb::PipelineLassoShape {
        features: features as u64,
        fits: fits
            .iter()
            .map(|(id, slots)| pb::PipelineLassoFit {
                fit: Some(pb::FitId {
                    repeat: id.repeat,
                    fold: id.fold,
                }),
                slots: slots.iter().map(slot_to).collect(),
            })
            .collect(),
    }
}

pub(crate) fn pipeline_shape_from(s: pb::PipelineLassoShape) -> Result<SumShape> {
    let features = features_from("PipelineLassoShape.features", s.features)?;
    Ok(SumShape::PipelineLasso {
        features,
        fits: s
            .fits
            .into_iter()
            .map(|f| {
                let id = f.fit.ok_or(ConvertError::Missing("PipelineLassoFit.fit"))?;
                Ok((
                    FitId {
                        repeat: id.repeat,
                        fold: id.fold,
                    },
                    f.slots
                        .into_iter()
                        .map(|s| slot_from(s, features))
                        .collect::<Result<_>>()?,
                ))
            })
            .collect::<Result<_>>()?,
    })
}
