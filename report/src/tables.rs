//! The CSV files: one tidy table per curve (one row per point, one column per quantity, empty
//! cells where a value is undefined), written with the `csv` crate so names with commas or
//! quotes are quoted correctly.

use csv::Writer;
use stats::report::{KmCurveReport, ModelReport};

use crate::error::ReportError;
use crate::model::{LassoReport, SiteContribution};

fn opt(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or_else(String::new, |v| v.to_string())
}

fn fnum(x: f64) -> String {
    opt(Some(x))
}

/// Builds one CSV from a header and rows.
fn csv_bytes(
    file: &'static str,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<Vec<u8>, ReportError> {
    let err = |e: csv::Error| ReportError::Csv {
        file,
        message: e.to_string(),
    };
    let mut w = Writer::from_writer(Vec::new());
    w.write_record(header).map_err(err)?;
    for r in rows {
        w.write_record(&r).map_err(err)?;
    }
    w.into_inner().map_err(|e| ReportError::Csv {
        file,
        message: e.to_string(),
    })
}

/// `threshold,fpr,tpr` (threshold empty for the curve's +∞ start; positive iff p ≥ threshold).
pub(crate) fn roc_csv(file: &'static str, m: &ModelReport) -> Result<Vec<u8>, ReportError> {
    csv_bytes(
        file,
        &["threshold", "fpr", "tpr"],
        m.roc
            .iter()
            .map(|p| vec![opt(p.threshold), fnum(p.fpr), fnum(p.tpr)]),
    )
}

/// `model,group,lower,upper,n,n_pos,mean_predicted,observed` for every model.
pub(crate) fn calibration_csv(models: &[ModelReport]) -> Result<Vec<u8>, ReportError> {
    csv_bytes(
        "calibration.csv",
        &[
            "model",
            "group",
            "lower",
            "upper",
            "n",
            "n_pos",
            "mean_predicted",
            "observed",
        ],
        models.iter().flat_map(|m| {
            m.calibration.iter().enumerate().map(|(g, b)| {
                vec![
                    m.name.clone(),
                    (g + 1).to_string(),
                    fnum(b.lower),
                    fnum(b.upper),
                    b.n.to_string(),
                    b.n_pos.to_string(),
                    fnum(b.mean_predicted),
                    fnum(b.observed),
                ]
            })
        }),
    )
}

/// `model,threshold,net_benefit,treat_all,treat_none` for every model.
pub(crate) fn decision_curve_csv(models: &[ModelReport]) -> Result<Vec<u8>, ReportError> {
    csv_bytes(
        "decision_curve.csv",
        &[
            "model",
            "threshold",
            "net_benefit",
            "treat_all",
            "treat_none",
        ],
        models.iter().flat_map(|m| {
            m.decision_curve.iter().map(|p| {
                vec![
                    m.name.clone(),
                    fnum(p.threshold),
                    fnum(p.net_benefit),
                    fnum(p.treat_all),
                    fnum(p.treat_none),
                ]
            })
        }),
    )
}

/// `group,time,survival,ci_lower,ci_upper,at_risk,events,censored`, one row per life-table row
/// of each group (S = 1 before the first row).
pub(crate) fn km_csv(file: &'static str, curves: &[KmCurveReport]) -> Result<Vec<u8>, ReportError> {
    csv_bytes(
        file,
        &[
            "group", "time", "survival", "ci_lower", "ci_upper", "at_risk", "events", "censored",
        ],
        curves.iter().flat_map(|c| {
            c.steps.iter().map(|s| {
                vec![
                    c.label.clone(),
                    fnum(s.time),
                    fnum(s.survival),
                    opt(s.ci_lower),
                    opt(s.ci_upper),
                    s.at_risk.to_string(),
                    s.events.to_string(),
                    s.censored.to_string(),
                ]
            })
        }),
    )
}

/// Long format: `lambda_index,lambda,log_lambda,feature,coefficient_standardised,
/// coefficient_original`, plus the intercepts as feature `(intercept)`.
pub(crate) fn lasso_path_csv(l: &LassoReport) -> Result<Vec<u8>, ReportError> {
    let path = &l.result.cv.path;
    let mut rows = Vec::new();
    for (k, lam) in path.lambdas.iter().enumerate() {
        let head = |name: &str, s: Option<f64>, o: Option<f64>| {
            vec![
                k.to_string(),
                fnum(*lam),
                fnum(lam.ln()),
                name.to_string(),
                opt(s),
                opt(o),
            ]
        };
        rows.push(head(
            "(intercept)",
            path.beta0.get(k).copied(),
            path.beta0_original.get(k).copied(),
        ));
        for (j, name) in l.feature_names.iter().enumerate() {
            rows.push(head(
                name,
                path.beta.get(k).and_then(|b| b.get(j)).copied(),
                path.beta_original.get(k).and_then(|b| b.get(j)).copied(),
            ));
        }
    }
    csv_bytes(
        "lasso_path.csv",
        &[
            "lambda_index",
            "lambda",
            "log_lambda",
            "feature",
            "coefficient_standardised",
            "coefficient_original",
        ],
        rows,
    )
}

/// `lambda,log_lambda,cvm,cvsd,cvlo,cvup,nzero,dev_ratio,is_lambda_min,is_lambda_1se`
/// (cv.glmnet's columns; cvlo/cvup = cvm ∓ cvsd).
pub(crate) fn lasso_cv_csv(l: &LassoReport) -> Result<Vec<u8>, ReportError> {
    let cv = &l.result.cv;
    csv_bytes(
        "lasso_cv.csv",
        &[
            "lambda",
            "log_lambda",
            "cvm",
            "cvsd",
            "cvlo",
            "cvup",
            "nzero",
            "dev_ratio",
            "is_lambda_min",
            "is_lambda_1se",
        ],
        cv.lambdas.iter().enumerate().map(|(k, lam)| {
            let m = cv.cvm.get(k).copied();
            let s = cv.cvsd.get(k).copied();
            vec![
                fnum(*lam),
                fnum(lam.ln()),
                opt(m),
                opt(s),
                opt(m.zip(s).map(|(m, s)| m - s)),
                opt(m.zip(s).map(|(m, s)| m + s)),
                cv.path
                    .nzero
                    .get(k)
                    .map_or_else(String::new, |n| n.to_string()),
                opt(cv.path.dev_ratio.get(k).copied()),
                (k == cv.index_min).to_string(),
                (k == cv.index_1se).to_string(),
            ]
        }),
    )
}

/// `rank,feature,index,frequency,mean_abs_beta,in_top_k,selected_at_lambda_min`, all features
/// in the bootstrap ranking order. Without a bootstrap only the λ.min selection is listed.
pub(crate) fn selection_csv(l: &LassoReport) -> Result<Vec<u8>, ReportError> {
    let header = [
        "rank",
        "feature",
        "index",
        "frequency",
        "mean_abs_beta",
        "in_top_k",
        "selected_at_lambda_min",
    ];
    let name = |j: usize| l.feature_names.get(j).cloned().unwrap_or_default();
    let at_min = |j: usize| l.result.cv.selected_min.contains(&j).to_string();
    match &l.result.bootstrap {
        Some(b) => csv_bytes(
            "selection_frequency.csv",
            &header,
            b.ranking.iter().enumerate().map(|(r, &j)| {
                vec![
                    (r + 1).to_string(),
                    name(j),
                    j.to_string(),
                    opt(b.frequency.get(j).copied()),
                    opt(b.mean_abs_beta.get(j).copied()),
                    b.top_k.contains(&j).to_string(),
                    at_min(j),
                ]
            }),
        ),
        None => csv_bytes(
            "selection_frequency.csv",
            &header,
            l.result.cv.selected_min.iter().map(|&j| {
                vec![
                    String::new(),
                    name(j),
                    j.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    at_min(j),
                ]
            }),
        ),
    }
}

/// `site,n,messages_sent,bytes_sent,suppressed_cells,note`.
pub(crate) fn sites_csv(sites: &[SiteContribution]) -> Result<Vec<u8>, ReportError> {
    csv_bytes(
        "sites.csv",
        &[
            "site",
            "n",
            "messages_sent",
            "bytes_sent",
            "suppressed_cells",
            "note",
        ],
        sites.iter().map(|s| {
            vec![
                s.site.clone(),
                s.n.map_or_else(|| "not released".into(), |n| n.to_string()),
                s.messages_sent.to_string(),
                s.bytes_sent.to_string(),
                s.suppressed_cells.to_string(),
                s.note.clone().unwrap_or_default(),
            ]
        }),
    )
}
