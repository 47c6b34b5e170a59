//! Conversions of the LASSO messages (`models::lasso` types ↔ protobuf), strict like the rest of
//! the edge.

use crate::convert::{ConvertError, f32_le, f64_le, from_f32_le, from_f64_le};
use crate::pb;
use federation::task::LassoTask;
use models::WeightedMoments;
use models::lasso::{FitRequest, FitSums, IrlsSums, MomentSums, RequestKind};
use models::sampling::{FoldRef, Refusal, WeightSpec};

fn fold_to(f: &FoldRef) -> pb::FoldRef {
    pb::FoldRef {
        scheme: f.scheme,
        fold: f.fold,
    }
}

fn fold_from(f: pb::FoldRef) -> FoldRef {
    FoldRef {
        scheme: f.scheme,
        fold: f.fold,
    }
}

fn request_to(r: &FitRequest) -> pb::FitRequest {
    pb::FitRequest {
        fit_id: r.fit_id,
        weights: Some(pb::WeightSpec {
            outer: r.weights.outer.as_ref().map(fold_to),
            exclude: r.weights.exclude.as_ref().map(fold_to),
            bootstrap: r
                .weights
                .bootstrap
                .map(|(seed, replicate)| pb::BootstrapRef { seed, replicate }),
        }),
        kind: Some(match &r.kind {
            RequestKind::Moments => pb::fit_request::Kind::Moments(pb::MomentsRequest {}),
            RequestKind::Irls {
                mean,
                sd,
                beta0,
                beta,
                hessian,
                cols,
                eval_only,
                basis,
                send_basis,
            } => pb::fit_request::Kind::Irls(pb::IrlsRequest {
                mean: mean.clone(),
                sd: sd.clone(),
                beta0: *beta0,
                beta: f64_le(beta),
                hessian: *hessian,
                cols: cols.as_ref().map(|c| pb::ColumnSet { cols: c.clone() }),
                eval_only: *eval_only,
                basis: *basis,
                send_basis: *send_basis,
            }),
        }),
    }
}

fn request_from(r: pb::FitRequest) -> Result<FitRequest, ConvertError> {
    let w = r
        .weights
        .ok_or(ConvertError::Missing("FitRequest.weights"))?;
    Ok(FitRequest {
        fit_id: r.fit_id,
        weights: WeightSpec {
            outer: w.outer.map(fold_from),
            exclude: w.exclude.map(fold_from),
            bootstrap: w.bootstrap.map(|b| (b.seed, b.replicate)),
        },
        kind: match r.kind.ok_or(ConvertError::Missing("FitRequest.kind"))? {
            pb::fit_request::Kind::Moments(_) => RequestKind::Moments,
            pb::fit_request::Kind::Irls(i) => RequestKind::Irls {
                mean: i.mean,
                sd: i.sd,
                beta0: i.beta0,
                beta: from_f64_le("IrlsRequest.beta", &i.beta)?,
                hessian: i.hessian,
                cols: i.cols.map(|c| c.cols),
                eval_only: i.eval_only,
                basis: i.basis,
                send_basis: i.send_basis,
            },
        },
    })
}

pub(crate) fn task_to(t: &LassoTask) -> pb::LassoTask {
    pb::LassoTask {
        site_key: t.site_key,
        requests: t.requests.iter().map(request_to).collect(),
    }
}

pub(crate) fn task_from(t: pb::LassoTask) -> Result<LassoTask, ConvertError> {
    Ok(LassoTask {
        site_key: t.site_key,
        requests: t
            .requests
            .into_iter()
            .map(request_from)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn sums_to(s: &[FitSums]) -> pb::LassoSums {
    pb::LassoSums {
        fits: s
            .iter()
            .map(|f| pb::FitSums {
                sums: Some(match f {
                    FitSums::Moments(m) => pb::fit_sums::Sums::Moments(pb::MomentSums {
                        fit_id: m.fit_id,
                        sum_w: m.sum_w,
                        sum_wy: m.sum_wy,
                        w: m.features.iter().map(|f| f.w).collect(),
                        mean: m.features.iter().map(|f| f.mean).collect(),
                        m2: m.features.iter().map(|f| f.m2).collect(),
                    }),
                    FitSums::Irls(i) => pb::fit_sums::Sums::Irls(pb::IrlsSums {
                        fit_id: i.fit_id,
                        sum_w: i.sum_w,
                        loss: i.loss,
                        r0: i.r0,
                        rx: f64_le(&i.rx),
                        w0: i.w0,
                        wx: f64_le(&i.wx),
                        // Exact for the sites' (single-precision) Hessians.
                        hess: f32_le(&i.hess),
                        hess_factor: f32_le(&i.hess_factor),
                        hess_basis: f64_le(&i.hess_basis),
                        basis_r: f64_le(&i.basis_r),
                        heldout_w: i.heldout_w,
                        heldout_dev: i.heldout_dev,
                    }),
                    FitSums::Refused(r) => pb::fit_sums::Sums::Refused(pb::FitRefusal {
                        fit_id: r.fit_id,
                        params: r.params as u64,
                        rows: r.rows as u64,
                        max_params_per_row: r.max_params_per_row,
                    }),
                }),
            })
            .collect(),
    }
}

pub(crate) fn sums_from(s: pb::LassoSums) -> Result<Vec<FitSums>, ConvertError> {
    s.fits
        .into_iter()
        .map(|f| {
            Ok(match f.sums.ok_or(ConvertError::Missing("FitSums.sums"))? {
                pb::fit_sums::Sums::Moments(m) => {
                    for (field, got) in [
                        ("MomentSums.mean", m.mean.len()),
                        ("MomentSums.m2", m.m2.len()),
                    ] {
                        if got != m.w.len() {
                            return Err(ConvertError::Length {
                                field,
                                got,
                                expected: m.w.len(),
                            });
                        }
                    }
                    FitSums::Moments(MomentSums {
                        fit_id: m.fit_id,
                        sum_w: m.sum_w,
                        sum_wy: m.sum_wy,
                        features: (m.w.iter().zip(&m.mean).zip(&m.m2))
                            .map(|((&w, &mean), &m2)| WeightedMoments { w, mean, m2 })
                            .collect(),
                    })
                }
                pb::fit_sums::Sums::Irls(i) => FitSums::Irls(IrlsSums {
                    fit_id: i.fit_id,
                    sum_w: i.sum_w,
                    loss: i.loss,
                    r0: i.r0,
                    rx: from_f64_le("IrlsSums.rx", &i.rx)?,
                    w0: i.w0,
                    wx: from_f64_le("IrlsSums.wx", &i.wx)?,
                    hess: from_f32_le("IrlsSums.hess", &i.hess)?,
                    hess_factor: from_f32_le("IrlsSums.hess_factor", &i.hess_factor)?,
                    hess_basis: from_f64_le("IrlsSums.hess_basis", &i.hess_basis)?,
                    basis_r: from_f64_le("IrlsSums.basis_r", &i.basis_r)?,
                    heldout_w: i.heldout_w,
                    heldout_dev: i.heldout_dev,
                }),
                pb::fit_sums::Sums::Refused(r) => FitSums::Refused(Refusal {
                    fit_id: r.fit_id,
                    params: r.params as usize,
                    rows: r.rows as usize,
                    max_params_per_row: r.max_params_per_row,
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_fields_round_trip_and_a_ragged_length_is_named() {
        let beta = vec![0.1, -0.0, f64::MIN_POSITIVE, 1e300, -7.25];
        assert_eq!(
            from_f64_le("b", &f64_le(&beta))
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            beta.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // Single-precision values (as the sites round x̃ᵀWx̃) come back exactly.
        let h: Vec<f64> = [0.5f32, -3.0e-8, 1.0e30]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        assert_eq!(from_f32_le("h", &f32_le(&h)).unwrap(), h);

        let sums = pb::LassoSums {
            fits: vec![pb::FitSums {
                sums: Some(pb::fit_sums::Sums::Irls(pb::IrlsSums {
                    hess_factor: vec![0; 5],
                    ..Default::default()
                })),
            }],
        };
        let err = sums_from(sums).unwrap_err().to_string();
        assert!(
            err.contains("IrlsSums.hess_factor") && err.contains("5 bytes"),
            "{err}"
        );
    }
}
