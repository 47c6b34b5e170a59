//! [`write_report`]: renders every file in memory, writes them into a staging directory next to
//! the output directory, then moves them into place, so a failure leaves no half-written file
//! and no half-written report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::figures::classification::{
    CalibrationFigure, ConfusionFigure, DecisionCurveFigure, RocFigure,
};
use crate::figures::lasso::{LassoCvFigure, LassoPathFigure, SelectionFigure};
use crate::figures::survival::KmFigure;
use crate::figures::{Rendered, render};
use crate::model::{Part, STUDY_REPORT_SCHEMA_VERSION, StudyReport};
use crate::{html, tables};

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Every file written, relative to `out_dir` (`/`-separated), sorted.
    pub files: Vec<String>,
    /// Parts of the report that were not rendered, with the reason shown in report.html.
    pub not_rendered: Vec<NotRendered>,
}

/// A part of the report left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRendered {
    /// Which part (e.g. "survival by predicted group").
    pub part: String,
    /// Why (as shown in the page).
    pub reason: String,
}

/// Every file name the writer can produce (besides `roc_model<k>.csv`): files from an older
/// report in the same directory that this one does not produce are removed, so a stale
/// `km_predicted.csv` never sits next to a page that says survival was not computed.
const KNOWN_FILES: [&str; 13] = [
    "metrics.json",
    "report.html",
    "table1.csv",
    "lasso_path.csv",
    "lasso_cv.csv",
    "selection_frequency.csv",
    "roc_ml.csv",
    "roc_clinical.csv",
    "calibration.csv",
    "decision_curve.csv",
    "km_predicted.csv",
    "km_observed.csv",
    "sites.csv",
];

/// Every figure stem.
pub const FIGURE_STEMS: [&str; 9] = [
    "lasso_path",
    "lasso_cv",
    "selection_frequency",
    "roc",
    "confusion_matrix",
    "calibration",
    "decision_curve",
    "km_predicted",
    "km_observed",
];

/// Checks what the types cannot: shapes that must agree.
fn validate(r: &StudyReport) -> Result<(), ReportError> {
    if r.schema_version != STUDY_REPORT_SCHEMA_VERSION {
        return Err(ReportError::Inconsistent(format!(
            "schema_version is {} but this writer renders version {}",
            r.schema_version, STUDY_REPORT_SCHEMA_VERSION
        )));
    }
    if let Some(l) = r.lasso.get() {
        let p = l.feature_names.len();
        let cv = &l.result.cv;
        if let Some(b) = cv.path.beta.iter().find(|b| b.len() != p) {
            return Err(ReportError::Inconsistent(format!(
                "the LASSO path has {} coefficients per λ but {p} feature names were given",
                b.len()
            )));
        }
        if cv.path.beta.len() != cv.path.lambdas.len() {
            return Err(ReportError::Inconsistent(format!(
                "the LASSO path has {} λ values but {} coefficient vectors",
                cv.path.lambdas.len(),
                cv.path.beta.len()
            )));
        }
        if let Some(j) = cv.selected_min.iter().find(|&&j| j >= p) {
            return Err(ReportError::Inconsistent(format!(
                "LASSO selected_min names feature {j} but there are {p} features"
            )));
        }
        if let Some(b) = &l.result.bootstrap
            && (b.frequency.len() != p || b.ranking.iter().any(|&j| j >= p))
        {
            return Err(ReportError::Inconsistent(format!(
                "the bootstrap selection covers {} features but {p} feature names were given",
                b.frequency.len()
            )));
        }
    }
    Ok(())
}

/// Everything to write, in memory.
struct Built {
    files: BTreeMap<String, Vec<u8>>,
    not_rendered: Vec<NotRendered>,
}

fn build(r: &StudyReport) -> Result<Built, ReportError> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut figs: BTreeMap<&'static str, Rendered> = BTreeMap::new();
    let mut not_rendered = Vec::new();
    let mut skip = |part: &str, why: Option<String>| {
        if let Some(reason) = why {
            not_rendered.push(NotRendered {
                part: part.to_string(),
                reason,
            });
        }
    };
    let add_fig = |figs: &mut BTreeMap<&'static str, Rendered>, f: Rendered| {
        figs.insert(f.stem, f);
    };

    match &r.table1 {
        Part::Available(t) => {
            files.insert("table1.csv".into(), t.to_csv().into_bytes());
        }
        other => skip("cohort table", other.why_missing()),
    }

    match &r.lasso {
        Part::Available(l) => {
            files.insert("lasso_path.csv".into(), tables::lasso_path_csv(l)?);
            files.insert("lasso_cv.csv".into(), tables::lasso_cv_csv(l)?);
            files.insert("selection_frequency.csv".into(), tables::selection_csv(l)?);
            add_fig(&mut figs, render(&LassoPathFigure { lasso: l })?);
            add_fig(&mut figs, render(&LassoCvFigure { lasso: l })?);
            if l.result.bootstrap.is_some() {
                add_fig(&mut figs, render(&SelectionFigure { lasso: l })?);
            } else {
                skip(
                    "bootstrap selection frequencies",
                    Some("the study ran no bootstrap selection".into()),
                );
            }
        }
        other => skip("LASSO feature selection", other.why_missing()),
    }

    match r.metrics.get() {
        Some(m) if !m.models.is_empty() => {
            for (k, model) in m.models.iter().enumerate() {
                let name = match k {
                    0 => "roc_ml.csv".to_string(),
                    1 => "roc_clinical.csv".to_string(),
                    _ => format!("roc_model{}.csv", k + 1),
                };
                files.insert(name, tables::roc_csv("roc_<model>.csv", model)?);
            }
            files.insert(
                "calibration.csv".into(),
                tables::calibration_csv(&m.models)?,
            );
            files.insert(
                "decision_curve.csv".into(),
                tables::decision_curve_csv(&m.models)?,
            );
            let models = m.models.as_slice();
            add_fig(&mut figs, render(&RocFigure { models })?);
            add_fig(&mut figs, render(&ConfusionFigure { models })?);
            add_fig(&mut figs, render(&CalibrationFigure { models })?);
            add_fig(&mut figs, render(&DecisionCurveFigure { models })?);
        }
        Some(m) => skip(
            "classification metrics",
            Some(if m.notes.is_empty() {
                "the metrics report holds no model".into()
            } else {
                m.notes.join("; ")
            }),
        ),
        None => skip("classification metrics", r.metrics.why_missing()),
    }

    let surv = r.survival_parts();
    for (stem, file, title, part, label) in [
        (
            "km_predicted",
            "km_predicted.csv",
            "Survival by predicted group",
            &surv.predicted,
            "survival by predicted group",
        ),
        (
            "km_observed",
            "km_observed.csv",
            "Survival by observed response",
            &surv.observed,
            "survival by observed response",
        ),
    ] {
        match part {
            Part::Available(a) => {
                files.insert(file.into(), tables::km_csv(file, &a.curves)?);
                if a.curves.is_empty() {
                    skip(
                        &format!("{label}: Kaplan-Meier figure"),
                        Some("no group has any patient".into()),
                    );
                } else {
                    let title = format!("{title}: {}", a.endpoint);
                    add_fig(
                        &mut figs,
                        render(&KmFigure {
                            stem,
                            title,
                            analysis: a,
                        })?,
                    );
                }
            }
            other => skip(label, other.why_missing()),
        }
    }

    match &r.sites {
        Part::Available(s) => {
            files.insert("sites.csv".into(), tables::sites_csv(s)?);
        }
        other => skip("per-site contributions", other.why_missing()),
    }

    for f in figs.values() {
        files.insert(
            format!("figures/{}.svg", f.stem),
            f.svg.clone().into_bytes(),
        );
        files.insert(format!("figures/{}.png", f.stem), f.png.clone());
    }
    files.insert("metrics.json".into(), serde_json::to_vec_pretty(r)?);
    // The page lists the data files next to each section, so it is built last.
    let mut names: Vec<String> = files.keys().cloned().collect();
    names.push("report.html".into());
    let page = html::render(r, &figs, &names);
    files.insert("report.html".into(), page.into_bytes());
    Ok(Built {
        files,
        not_rendered,
    })
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ReportError + 'a {
    move |source| ReportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh staging directory beside `out_dir` (same file system, so renames are atomic).
fn staging_dir(out_dir: &Path) -> Result<PathBuf, ReportError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ReportError::OutDir {
            path: out_dir.to_path_buf(),
            reason: "has no final component; name a directory such as results/report".into(),
        })?;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".{name}.staging-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", &dir)(e)),
        }
    }
}

fn write_staged(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), ReportError> {
    let figs = dir.join("figures");
    std::fs::create_dir(&figs).map_err(io("create", &figs))?;
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
    }
    Ok(())
}

/// Moves staged files into an existing output directory, one rename each, then removes files
/// of an older report that this one does not produce.
fn merge_into(
    staging: &Path,
    out_dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), ReportError> {
    let figs = out_dir.join("figures");
    if !figs.is_dir() {
        std::fs::create_dir(&figs).map_err(io("create", &figs))?;
    }
    // Data and figures first, the page and metrics.json last: a reader who sees the new page
    // finds the new files.
    let last = ["metrics.json", "report.html"];
    let order = files
        .keys()
        .filter(|k| !last.contains(&k.as_str()))
        .chain(files.keys().filter(|k| last.contains(&k.as_str())));
    for rel in order {
        let from = staging.join(rel);
        let to = out_dir.join(rel);
        std::fs::rename(&from, &to).map_err(io("rename", &to))?;
    }
    let mut stale: Vec<PathBuf> = KNOWN_FILES
        .iter()
        .map(|f| f.to_string())
        .chain(
            FIGURE_STEMS
                .iter()
                .flat_map(|s| [format!("figures/{s}.svg"), format!("figures/{s}.png")]),
        )
        .filter(|f| !files.contains_key(f))
        .map(|f| out_dir.join(f))
        .collect();
    if let Ok(rd) = std::fs::read_dir(out_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("roc_model") && n.ends_with(".csv") && !files.contains_key(&n) {
                stale.push(e.path());
            }
        }
    }
    for f in stale {
        if f.is_file() {
            std::fs::remove_file(&f).map_err(io("remove", &f))?;
        }
    }
    Ok(())
}

/// Writes the statistician's report of `report` into `out_dir`:
///
/// - `metrics.json` — the whole [`StudyReport`];
/// - CSVs of every curve: `roc_ml.csv`, `roc_clinical.csv` (further models `roc_model3.csv`, …),
///   `calibration.csv`, `decision_curve.csv`, `km_predicted.csv`, `km_observed.csv`,
///   `lasso_path.csv`, `lasso_cv.csv`, `selection_frequency.csv`, `table1.csv`, `sites.csv`;
/// - `figures/<stem>.svg` and `.png` for every figure in [`FIGURE_STEMS`] that has data;
/// - `report.html`, self-contained (inline CSS and SVG, no script, no URL).
///
/// A part that is omitted or unavailable produces no file; the page says why, and
/// [`Written::not_rendered`] lists it.
///
/// Atomicity: every file is rendered in memory first and written into a staging directory
/// beside `out_dir`. If `out_dir` does not exist the staging directory is renamed to it (one
/// atomic step). If it exists (a re-run), each file replaces its old version by rename and
/// files of the older report that this one does not produce are removed; other files in the
/// directory are left alone. On any error the staging directory is removed and `out_dir` is
/// as it was (except, for a re-run, when a rename itself fails midway).
pub fn write_report(report: &StudyReport, out_dir: &Path) -> Result<Written, ReportError> {
    validate(report)?;
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(ReportError::OutDir {
            path: out_dir.to_path_buf(),
            reason: "exists and is not a directory; choose a directory path".into(),
        });
    }
    let built = build(report)?;
    let staging = staging_dir(out_dir)?;
    let result = write_staged(&staging, &built.files).and_then(|()| {
        if out_dir.exists() {
            merge_into(&staging, out_dir, &built.files)
        } else {
            std::fs::rename(&staging, out_dir).map_err(io("rename", out_dir))
        }
    });
    if staging.exists() {
        // Best effort: a leftover hidden staging directory is harmless, and the real error
        // (if any) is the one to report.
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    Ok(Written {
        out_dir: out_dir.to_path_buf(),
        files: built.files.keys().cloned().collect(),
        not_rendered: built.not_rendered,
    })
}
