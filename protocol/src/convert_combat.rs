//! Conversions of the ComBat messages (`models::combat` types ↔ protobuf), strict like the rest
//! of the edge: a missing field or a matrix whose size disagrees with its shape is a typed error.

use crate::convert::ConvertError;
use crate::pb;
use federation::task::{BatchSource, ComBatTask};
use models::combat::{
    BatchAdjustment, ComBatCrossProducts, ComBatFit, ComBatGlobal, ComBatOptions, ComBatResiduals,
    CovariateKind, CovariateSpec, DesignSpec, EbMode, SiteLevels,
};
use ndarray::Array2;

pub(crate) fn matrix_to(m: &Array2<f64>) -> pb::Matrix {
    pb::Matrix {
        rows: m.nrows() as u32,
        cols: m.ncols() as u32,
        data: m.iter().copied().collect(),
    }
}

pub(crate) fn matrix_from(
    m: Option<pb::Matrix>,
    field: &'static str,
) -> Result<Array2<f64>, ConvertError> {
    let m = m.ok_or(ConvertError::Missing(field))?;
    let (r, c) = (m.rows as usize, m.cols as usize);
    let got = m.data.len();
    Array2::from_shape_vec((r, c), m.data).map_err(|_| ConvertError::Length {
        field,
        got,
        expected: r * c,
    })
}

fn batch_to(b: &BatchSource) -> pb::BatchSource {
    pb::BatchSource {
        source: Some(match b {
            BatchSource::Label(l) => pb::batch_source::Source::Label(l.clone()),
            BatchSource::Column(c) => pb::batch_source::Source::Column(c.clone()),
        }),
    }
}

fn batch_from(b: Option<pb::BatchSource>) -> Result<BatchSource, ConvertError> {
    match b.and_then(|b| b.source) {
        Some(pb::batch_source::Source::Label(l)) => Ok(BatchSource::Label(l)),
        Some(pb::batch_source::Source::Column(c)) => Ok(BatchSource::Column(c)),
        None => Err(ConvertError::Missing("ComBatTask.batch")),
    }
}

pub(crate) fn design_to(d: &DesignSpec) -> pb::DesignSpec {
    pb::DesignSpec {
        batches: d.batches.clone(),
        covariates: d
            .covariates
            .iter()
            .map(|c| match &c.kind {
                CovariateKind::Continuous => pb::CovariateSpec {
                    name: c.name.clone(),
                    categorical: false,
                    levels: vec![],
                },
                CovariateKind::Categorical { levels } => pb::CovariateSpec {
                    name: c.name.clone(),
                    categorical: true,
                    levels: levels.clone(),
                },
            })
            .collect(),
    }
}

pub(crate) fn design_from(
    d: Option<pb::DesignSpec>,
    field: &'static str,
) -> Result<DesignSpec, ConvertError> {
    let d = d.ok_or(ConvertError::Missing(field))?;
    Ok(DesignSpec {
        batches: d.batches,
        covariates: d
            .covariates
            .into_iter()
            .map(|c| CovariateSpec {
                name: c.name,
                kind: if c.categorical {
                    CovariateKind::Categorical { levels: c.levels }
                } else {
                    CovariateKind::Continuous
                },
            })
            .collect(),
    })
}

pub(crate) fn fit_to(f: &ComBatFit) -> pb::ComBatFit {
    pb::ComBatFit {
        spec: Some(design_to(&f.spec)),
        beta: Some(matrix_to(&f.beta)),
        grand_mean: f.grand_mean.clone(),
        batch_n: f.batch_n.clone(),
        n: f.n,
        unadjusted: f.unadjusted.clone(),
    }
}

pub(crate) fn fit_from(
    f: Option<pb::ComBatFit>,
    field: &'static str,
) -> Result<ComBatFit, ConvertError> {
    let f = f.ok_or(ConvertError::Missing(field))?;
    Ok(ComBatFit {
        spec: design_from(f.spec, "ComBatFit.spec")?,
        beta: matrix_from(f.beta, "ComBatFit.beta")?,
        grand_mean: f.grand_mean,
        batch_n: f.batch_n,
        n: f.n,
        unadjusted: f.unadjusted,
    })
}

pub(crate) fn global_to(g: &ComBatGlobal) -> pb::ComBatGlobal {
    pb::ComBatGlobal {
        fit: Some(fit_to(&g.fit)),
        var_pooled: g.var_pooled.clone(),
    }
}

pub(crate) fn global_from(g: pb::ComBatGlobal) -> Result<ComBatGlobal, ConvertError> {
    Ok(ComBatGlobal {
        fit: fit_from(g.fit, "ComBatGlobal.fit")?,
        var_pooled: g.var_pooled,
    })
}

pub(crate) fn options_to(o: &ComBatOptions) -> pb::ComBatOptions {
    use pb::com_bat_options::Mode;
    pb::ComBatOptions {
        mode: match o.mode {
            EbMode::Parametric => Mode::Parametric,
            EbMode::NonParametric => Mode::NonParametric,
            EbMode::None => Mode::None,
        } as i32,
        mean_only: o.mean_only,
        tol: o.tol,
        max_iter: o.max_iter as u64,
    }
}

pub(crate) fn options_from(o: pb::ComBatOptions) -> Result<ComBatOptions, ConvertError> {
    use pb::com_bat_options::Mode;
    let mode = match Mode::try_from(o.mode) {
        Ok(Mode::Parametric) => EbMode::Parametric,
        Ok(Mode::NonParametric) => EbMode::NonParametric,
        Ok(Mode::None) => EbMode::None,
        _ => return Err(ConvertError::Missing("ComBatOptions.mode")),
    };
    Ok(ComBatOptions {
        mode,
        mean_only: o.mean_only,
        tol: o.tol,
        max_iter: o.max_iter as usize,
    })
}

pub(crate) fn task_to(t: &ComBatTask) -> pb::ComBatTask {
    pb::ComBatTask {
        batch: Some(batch_to(&t.batch)),
        design: t.design.as_ref().map(design_to),
        fit: t.fit.as_ref().map(fit_to),
        global: t.global.as_ref().map(global_to),
        options: t.options.as_ref().map(options_to),
    }
}

pub(crate) fn task_from(t: pb::ComBatTask) -> Result<ComBatTask, ConvertError> {
    Ok(ComBatTask {
        batch: batch_from(t.batch)?,
        design: t
            .design
            .map(|d| design_from(Some(d), "ComBatTask.design"))
            .transpose()?,
        fit: t
            .fit
            .map(|f| fit_from(Some(f), "ComBatTask.fit"))
            .transpose()?,
        global: t.global.map(global_from).transpose()?,
        options: t.options.map(options_from).transpose()?,
    })
}

pub(crate) fn levels_to(l: &SiteLevels) -> pb::ComBatLevels {
    pb::ComBatLevels {
        batches: l.batches.clone(),
        levels: l
            .levels
            .iter()
            .map(|v| pb::LevelList { levels: v.clone() })
            .collect(),
    }
}

pub(crate) fn levels_from(l: pb::ComBatLevels) -> SiteLevels {
    SiteLevels {
        batches: l.batches,
        levels: l.levels.into_iter().map(|v| v.levels).collect(),
    }
}

pub(crate) fn cross_to(c: &ComBatCrossProducts) -> pb::ComBatCrossProducts {
    pb::ComBatCrossProducts {
        n: c.n,
        wtw: c.wtw.clone(),
        wty: c.wty.clone(),
        constant_in_batch: c.constant_in_batch.clone(),
    }
}

pub(crate) fn cross_from(c: pb::ComBatCrossProducts) -> ComBatCrossProducts {
    ComBatCrossProducts {
        n: c.n,
        wtw: c.wtw,
        wty: c.wty,
        constant_in_batch: c.constant_in_batch,
    }
}

pub(crate) fn residuals_to(r: &ComBatResiduals) -> pb::ComBatResiduals {
    pb::ComBatResiduals {
        n: r.n,
        rss: r.rss.clone(),
    }
}

pub(crate) fn residuals_from(r: pb::ComBatResiduals) -> ComBatResiduals {
    ComBatResiduals { n: r.n, rss: r.rss }
}

pub(crate) fn estimates_to(b: &[BatchAdjustment]) -> pb::ComBatEstimates {
    pb::ComBatEstimates {
        batches: b
            .iter()
            .map(|a| pb::BatchAdjustment {
                batch: a.batch.clone(),
                n: a.n,
                gamma_hat: a.gamma_hat.clone(),
                delta_hat: a.delta_hat.clone(),
                gamma_bar: a.gamma_bar,
                tau2: a.tau2,
                a_prior: a.a_prior,
                b_prior: a.b_prior,
                gamma_star: a.gamma_star.clone(),
                delta_star: a.delta_star.clone(),
                iterations: a.iterations as u64,
            })
            .collect(),
    }
}

pub(crate) fn estimates_from(e: pb::ComBatEstimates) -> Vec<BatchAdjustment> {
    e.batches
        .into_iter()
        .map(|a| BatchAdjustment {
            batch: a.batch,
            n: a.n,
            gamma_hat: a.gamma_hat,
            delta_hat: a.delta_hat,
            gamma_bar: a.gamma_bar,
            tau2: a.tau2,
            a_prior: a.a_prior,
            b_prior: a.b_prior,
            gamma_star: a.gamma_star,
            delta_star: a.delta_star,
            iterations: a.iterations as usize,
        })
        .collect()
}
