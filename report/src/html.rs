//! `report.html`: one self-contained page (inline CSS, figures as inline SVG, no script, no
//! external resource of any kind) with the sections a statistician reads in order: cohort,
//! feature selection, discrimination, confusion matrix, calibration, decision curve, survival,
//! per-site contributions, study settings. A part that is missing says why, in place.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use federation::table1::Table1Output;
use stats::metrics::Confusion;
use stats::report::{Estimate, MetricsSource, ModelReport, Report};

use crate::figures::survival::median_label;
use crate::figures::{Rendered, sig};
use crate::model::{LassoReport, Part, SiteContribution, StudyReport, SurvivalAnalysis};

/// Section ids and headings, in page order (the test checks every one is present).
pub const SECTIONS: [(&str, &str); 9] = [
    ("cohort", "Cohort (Table 1)"),
    ("feature-selection", "Feature selection (LASSO)"),
    ("discrimination", "Discrimination"),
    ("confusion", "Confusion matrix"),
    ("calibration", "Calibration"),
    ("decision-curve", "Decision curve"),
    ("survival", "Survival"),
    ("sites", "Per-site contributions"),
    ("settings", "Study settings"),
];

const CSS: &str = r#"
body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;color:#222;margin:0;background:#f4f5f7;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff}
header h1{margin:0 0 4px;font-size:28px}
header p{margin:2px 0;color:#555}
nav ol{columns:3;padding-left:20px;margin:14px 0 4px}
nav a{color:#1f5f99;text-decoration:none}
section{border-top:2px solid #dde3ea;margin-top:28px;padding-top:6px}
h2{font-size:22px;margin:10px 0}
h3{font-size:18px;margin:18px 0 8px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:14px}
th,td{border:1px solid #d5dbe2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:12px 0 18px}
figure svg{max-width:100%;height:auto;display:block;border:1px solid #e3e7ec}
figure svg text{font-family:"DejaVu Sans",Verdana,Arial,sans-serif}
figcaption{font-size:13px;color:#555;margin-top:4px}
.missing{background:#fff4e5;border-left:4px solid #e69500;padding:8px 12px;margin:10px 0}
.undefined{color:#a05a00}
.small{font-size:12px;color:#666}
.figrow{display:flex;flex-wrap:wrap;gap:12px}
details{margin:6px 0 12px}
code{background:#f0f2f4;padding:0 3px}
"#;

/// HTML-escapes text.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn num(x: Option<f64>, dp: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.dp$}"),
        _ => "n/a".into(),
    }
}

/// p-values: three decimals, and scientific notation below 0.001 (not a bare "0.000").
pub(crate) fn fmt_p(p: f64) -> String {
    if !p.is_finite() {
        "undefined".into()
    } else if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

fn missing(what: &str, reason: &str) -> String {
    format!(
        "<p class=\"missing\"><strong>{} not shown:</strong> {}</p>\n",
        esc(what),
        esc(reason)
    )
}

/// The SVG document as an element to inline: the XML prolog and namespace attributes dropped
/// (HTML5 does not need them, and the page must contain no URL at all).
pub(crate) fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    body.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
}

struct Page<'a> {
    figs: &'a BTreeMap<&'static str, Rendered>,
    files: &'a [String],
    fig_no: usize,
    out: String,
}

impl Page<'_> {
    fn figure(&mut self, stem: &str, caption: &str) {
        let Some(r) = self.figs.get(stem) else {
            return;
        };
        self.fig_no += 1;
        let _ = writeln!(
            self.out,
            "<figure id=\"fig-{stem}\">{}<figcaption>Figure {}. {} <span class=\"small\">(also \
             figures/{stem}.svg and figures/{stem}.png)</span></figcaption></figure>",
            inline_svg(&r.svg),
            self.fig_no,
            esc(caption)
        );
    }

    fn data_files(&mut self, names: &[&str]) {
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.files.iter().any(|f| f == n))
            .collect();
        if !present.is_empty() {
            let list: Vec<String> = present
                .iter()
                .map(|n| format!("<code>{}</code>", esc(n)))
                .collect();
            let _ = writeln!(
                self.out,
                "<p class=\"small\">Data: {}.</p>",
                list.join(", ")
            );
        }
    }

    fn section_start(&mut self, id: &str) {
        let title = SECTIONS
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(id, |(_, t)| t);
        let n = SECTIONS.iter().position(|(i, _)| *i == id).unwrap_or(0) + 1;
        let _ = writeln!(
            self.out,
            "<section id=\"{id}\">\n<h2>{n}. {}</h2>",
            esc(title)
        );
    }

    fn section_end(&mut self) {
        self.out.push_str("</section>\n");
    }
}

/// Builds the page. `figs` are the rendered figures by stem, `files` the relative paths of the
/// data files written next to the page.
pub(crate) fn render(
    r: &StudyReport,
    figs: &BTreeMap<&'static str, Rendered>,
    files: &[String],
) -> String {
    let mut p = Page {
        figs,
        files,
        fig_no: 0,
        out: String::new(),
    };
    let title = r.title();
    let _ = write!(
        p.out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta \
         name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(title)
    );
    header(&mut p, r);
    cohort(&mut p, &r.table1);
    feature_selection(&mut p, &r.lasso);
    let metrics = &r.metrics;
    discrimination(&mut p, metrics);
    confusion(&mut p, metrics);
    calibration(&mut p, metrics);
    decision_curve(&mut p, metrics);
    survival(&mut p, r);
    sites(&mut p, &r.sites);
    settings(&mut p, r);
    notes(&mut p, r);
    p.out.push_str("</main>\n</body>\n</html>\n");
    p.out
}

fn header(p: &mut Page, r: &StudyReport) {
    let s = &r.settings;
    let _ = writeln!(p.out, "<header>\n<h1>{}</h1>", esc(r.title()));
    let _ = writeln!(
        p.out,
        "<p>Study <strong>{}</strong> · spec hash <code>{}</code>{}</p>",
        esc(&s.study_id),
        esc(&s.spec_hash),
        s.generated_at
            .as_ref()
            .map(|g| format!(" · generated {}", esc(g)))
            .unwrap_or_default()
    );
    if let Some(m) = r.metrics.get() {
        let src = match &m.source {
            MetricsSource::CountTables {
                score_bins,
                max_min_count,
            } => format!(
                "Metrics from pooled site count tables ({score_bins}-bin score grid, largest \
                 site min_count {max_min_count}); no per-patient prediction left a site."
            ),
            MetricsSource::Exact => {
                "Metrics from per-patient predictions released under release_predictions."
                    .to_string()
            }
        };
        let _ = writeln!(p.out, "<p>{}</p>", esc(&src));
    }
    p.out.push_str("<nav><ol>\n");
    for (id, t) in SECTIONS {
        let _ = writeln!(p.out, "<li><a href=\"#{id}\">{}</a></li>", esc(t));
    }
    p.out.push_str("</ol></nav>\n</header>\n");
}

// ---------------------------------------------------------------------------------------------
// 1. Cohort

fn cohort(p: &mut Page, t: &Part<Table1Output>) {
    p.section_start("cohort");
    match t {
        Part::Available(t) => {
            table1_html(p, t);
            p.data_files(&["table1.csv"]);
        }
        other => p.out.push_str(&missing(
            "Table 1",
            &other.why_missing().unwrap_or_default(),
        )),
    }
    p.section_end();
}

/// Renders the same rows as `Table1Output::to_csv` (so the page and table1.csv never
/// disagree, and suppressed cells read "suppressed" in both).
fn table1_html(p: &mut Page, t: &Table1Output) {
    let csv_text = t.to_csv();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    p.out.push_str(
        "<table>\n<tr><th>Variable</th><th>Level</th><th>Overall</th><th>Group 1 \
         (positive)</th><th>Group 0 (negative)</th><th>Test</th><th>Statistic</th>\
         <th>p</th></tr>\n",
    );
    let mut last_var = String::new();
    for rec in rdr.records() {
        let Ok(rec) = rec else {
            continue;
        };
        let f = |i: usize| rec.get(i).unwrap_or("").to_string();
        let var = f(0);
        let shown_var = if var == last_var {
            String::new()
        } else {
            esc(&var)
        };
        last_var = var;
        let stat = f(6)
            .parse::<f64>()
            .map_or_else(|_| esc(&f(6)), |v| format!("{v:.3}"));
        let pv = f(7).parse::<f64>().map_or_else(|_| esc(&f(7)), fmt_p);
        let _ = writeln!(
            p.out,
            "<tr><td>{shown_var}</td><td>{}</td><td class=\"num\">{}</td><td \
             class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td \
             class=\"num\">{stat}</td><td class=\"num\">{pv}</td></tr>",
            esc(&f(1)),
            esc(&f(2)),
            esc(&f(3)),
            esc(&f(4)),
            esc(&f(5))
        );
    }
    p.out.push_str("</table>\n");
    let _ = writeln!(
        p.out,
        "<p class=\"small\">Continuous: mean ± SD (Student t) and median [IQR] (Mann-Whitney); \
         categorical: n (%) (Pearson χ²). Federated over {} site(s), {} histogram round(s); \
         cells the sites' min_count did not let through read \"suppressed\".</p>",
        t.sites.len(),
        t.histogram_rounds
    );
    if !t.notes.is_empty() {
        p.out.push_str("<ul class=\"small\">\n");
        for n in &t.notes {
            let _ = writeln!(p.out, "<li>{}</li>", esc(n));
        }
        p.out.push_str("</ul>\n");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Feature selection

fn feature_selection(p: &mut Page, l: &Part<LassoReport>) {
    p.section_start("feature-selection");
    let Part::Available(l) = l else {
        p.out.push_str(&missing(
            "LASSO feature selection",
            &l.why_missing().unwrap_or_default(),
        ));
        p.section_end();
        return;
    };
    let cv = &l.result.cv;
    let nz = |k: usize| cv.path.nzero.get(k).map_or("?".into(), |n| n.to_string());
    let _ = writeln!(
        p.out,
        "<p>glmnet-equivalent binomial LASSO over {} features; {} λ values; λ.min = {} ({} \
         features), λ.1se = {} ({} features). {} round trips, {} site requests.{}</p>",
        l.feature_names.len(),
        cv.path.lambdas.len(),
        sig(cv.lambda_min, 5),
        nz(cv.index_min),
        sig(cv.lambda_1se, 5),
        nz(cv.index_1se),
        l.result.rounds,
        l.result.fit_requests,
        if cv.path.converged {
            ""
        } else {
            " <strong>The full-data path did not converge and was truncated.</strong>"
        }
    );
    p.figure(
        "lasso_path",
        "Coefficient paths (standardised scale) against log λ; dashed lines at λ.min and λ.1se.",
    );
    p.figure(
        "lasso_cv",
        "Cross-validated binomial deviance (mean ± 1 SE over folds) against log λ.",
    );
    // Features selected at λ.min with their coefficients.
    if !cv.selected_min.is_empty() {
        p.out.push_str(
            "<h3>Selected at λ.min</h3>\n<table>\n<tr><th>Feature</th><th>Coefficient \
             (standardised)</th><th>Coefficient (original scale)</th></tr>\n",
        );
        for &j in &cv.selected_min {
            let get = |b: &Vec<Vec<f64>>| b.get(cv.index_min).and_then(|r| r.get(j)).copied();
            let _ = writeln!(
                p.out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(l.feature_names.get(j).map_or("?", String::as_str)),
                num(get(&cv.path.beta), 4),
                num(get(&cv.path.beta_original), 4)
            );
        }
        p.out.push_str("</table>\n");
    } else {
        p.out.push_str(
            "<p>No feature has a non-zero coefficient at λ.min (intercept-only model).</p>\n",
        );
    }
    match &l.result.bootstrap {
        Some(b) => {
            p.figure(
                "selection_frequency",
                &format!(
                    "Bootstrap selection frequency over B = {} replicates (stratified by site).",
                    b.replicates
                ),
            );
            let top: Vec<String> = b
                .top_k
                .iter()
                .map(|&j| {
                    format!(
                        "{} ({:.0}%)",
                        esc(l.feature_names.get(j).map_or("?", String::as_str)),
                        100.0 * b.frequency.get(j).copied().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                p.out,
                "<p>Top {}: {}.</p>",
                b.top_k.len(),
                if top.is_empty() {
                    "none".into()
                } else {
                    top.join(", ")
                }
            );
        }
        None => p.out.push_str(&missing(
            "Bootstrap selection frequencies",
            "the study ran no bootstrap selection (LassoConfig.bootstrap was not set)",
        )),
    }
    p.data_files(&["lasso_path.csv", "lasso_cv.csv", "selection_frequency.csv"]);
    p.section_end();
}

// ---------------------------------------------------------------------------------------------
// 3–6. Classification

fn models_or_missing<'a>(p: &mut Page, m: &'a Part<Report>, what: &str) -> Option<&'a Report> {
    match m {
        Part::Available(r) if !r.models.is_empty() => Some(r),
        Part::Available(r) => {
            let why = if r.notes.is_empty() {
                "the metrics report holds no model".to_string()
            } else {
                r.notes.join("; ")
            };
            p.out.push_str(&missing(what, &why));
            None
        }
        other => {
            p.out
                .push_str(&missing(what, &other.why_missing().unwrap_or_default()));
            None
        }
    }
}

/// Why a confusion-matrix metric has no value.
fn undefined_reason(metric: &str, c: &Confusion, n_pos: u64, n_neg: u64) -> String {
    match metric {
        "AUC" if n_pos == 0 || n_neg == 0 => "needs both classes".into(),
        "Sensitivity" => "no observed positive (TP + FN = 0)".into(),
        "Specificity" => "no observed negative (TN + FP = 0)".into(),
        "PPV" if c.tp + c.fp == 0 => "no patient predicted positive at the cut-off".into(),
        "NPV" if c.tn + c.fn_ == 0 => "no patient predicted negative at the cut-off".into(),
        "F1" => "TP + FP + FN = 0".into(),
        _ => "not estimable on these data (division by zero)".into(),
    }
}

fn estimate_cell(e: &Estimate, metric: &str, m: &ModelReport) -> String {
    match e.value {
        None => format!(
            "<td class=\"undefined\">undefined: {}</td>",
            esc(&undefined_reason(metric, &m.confusion, m.n_pos, m.n_neg))
        ),
        Some(v) => {
            let ci = match (e.ci_lower, e.ci_upper, &e.ci_method) {
                (Some(l), Some(u), _) => format!(" [{l:.3}, {u:.3}]"),
                (_, _, Some(_)) => " <span class=\"undefined\">[CI undefined: no bootstrap \
                                   replicate defined it]</span>"
                    .into(),
                _ => String::new(),
            };
            format!("<td class=\"num\">{v:.3}{ci}</td>")
        }
    }
}

fn discrimination(p: &mut Page, m: &Part<Report>) {
    p.section_start("discrimination");
    let Some(r) = models_or_missing(p, m, "Discrimination metrics") else {
        p.section_end();
        return;
    };
    p.figure(
        "roc",
        "ROC curves; legend AUC with its DeLong 95% CI; dots mark the Youden-optimal cut-off.",
    );
    p.out.push_str("<table>\n<tr><th>Metric</th>");
    for m in &r.models {
        let _ = write!(p.out, "<th>{}</th>", esc(&m.name));
    }
    p.out.push_str("<th>Interval</th></tr>\n");
    let row_n = |p: &mut Page| {
        p.out.push_str("<tr><td>n (positive / negative)</td>");
        for m in &r.models {
            let _ = write!(
                p.out,
                "<td class=\"num\">{} ({} / {})</td>",
                m.n_pos + m.n_neg,
                m.n_pos,
                m.n_neg
            );
        }
        p.out.push_str("<td></td></tr>\n");
    };
    row_n(p);
    type Getter = fn(&ModelReport) -> Option<&Estimate>;
    let rows: [(&str, &str, Getter); 9] = [
        ("AUC", "AUC (DeLong CI)", |m| Some(&m.auc)),
        ("AUC", "AUC (bootstrap CI)", |m| m.auc_bootstrap.as_ref()),
        ("Accuracy", "Accuracy", |m| Some(&m.accuracy)),
        ("Sensitivity", "Sensitivity", |m| Some(&m.sensitivity)),
        ("Specificity", "Specificity", |m| Some(&m.specificity)),
        ("F1", "F1", |m| Some(&m.f1)),
        ("PPV", "PPV", |m| Some(&m.ppv)),
        ("NPV", "NPV", |m| Some(&m.npv)),
        ("Brier", "Brier score", |m| Some(&m.brier)),
    ];
    for (key, label, get) in rows {
        let _ = write!(p.out, "<tr><td>{}</td>", esc(label));
        let mut method = None;
        for m in &r.models {
            match get(m) {
                Some(e) => {
                    p.out.push_str(&estimate_cell(e, key, m));
                    if method.is_none() {
                        method = e.ci_method.clone();
                    }
                }
                None => p
                    .out
                    .push_str("<td class=\"undefined\">not computed (no bootstrap)</td>"),
            }
        }
        let _ = writeln!(
            p.out,
            "<td class=\"small\">{}</td></tr>",
            esc(method.as_deref().unwrap_or("—"))
        );
    }
    p.out.push_str("<tr><td>Cut-off (positive iff p ≥)</td>");
    for m in &r.models {
        let _ = write!(
            p.out,
            "<td class=\"num\">{:.4} (J = {:.3})</td>",
            m.cutoff, m.youden_j
        );
    }
    p.out
        .push_str("<td class=\"small\">Youden-optimal; metrics above at this cut-off</td></tr>\n");
    if r.models
        .iter()
        .any(|m| m.auc_resolution_bound.is_some_and(|b| b > 0.0))
    {
        p.out.push_str("<tr><td>AUC resolution bound</td>");
        for m in &r.models {
            let _ = write!(
                p.out,
                "<td class=\"num\">{}</td>",
                num(m.auc_resolution_bound, 4)
            );
        }
        p.out.push_str(
            "<td class=\"small\">largest possible |AUC(count tables) − AUC(per patient)|</td>\
             </tr>\n",
        );
    }
    p.out.push_str("</table>\n");
    // Paired comparison.
    p.out
        .push_str("<h3>Paired comparison (DeLong test for correlated ROC curves)</h3>\n");
    if r.comparisons.is_empty() {
        let why = if r.models.len() < 2 {
            "only one model was evaluated".to_string()
        } else {
            "no paired comparison was computed in this study (it needs the joint or two-round \
             placement tables)"
                .to_string()
        };
        p.out.push_str(&missing("Paired DeLong test", &why));
    } else {
        p.out.push_str(
            "<table>\n<tr><th>Comparison</th><th>AUC difference</th><th>95% CI</th><th>z</th>\
             <th>p</th><th>Source</th></tr>\n",
        );
        for c in &r.comparisons {
            let d = &c.delong;
            let p_cell = if d.p_value.is_finite() {
                format!("<td class=\"num\">{}</td>", fmt_p(d.p_value))
            } else {
                "<td class=\"undefined\">undefined: the AUC difference has zero standard error \
                 (identical rankings)</td>"
                    .to_string()
            };
            let _ = writeln!(
                p.out,
                "<tr><td>{} − {}</td><td class=\"num\">{}</td><td class=\"num\">[{}, {}]</td>\
                 <td class=\"num\">{}</td>{p_cell}<td>{}</td></tr>",
                esc(&c.model_a),
                esc(&c.model_b),
                num(Some(d.difference), 3),
                num(Some(d.ci_lower), 3),
                num(Some(d.ci_upper), 3),
                num(Some(d.z), 2),
                esc(&c.source)
            );
        }
        p.out.push_str("</table>\n");
    }
    let mut files = vec!["roc_ml.csv".to_string(), "roc_clinical.csv".to_string()];
    files.extend((3..=r.models.len()).map(|k| format!("roc_model{k}.csv")));
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    p.data_files(&refs);
    p.section_end();
}

fn confusion(p: &mut Page, m: &Part<Report>) {
    p.section_start("confusion");
    if let Some(r) = models_or_missing(p, m, "Confusion matrix") {
        p.figure(
            "confusion_matrix",
            "Confusion matrices at each model's Youden cut-off; shading = share of the observed \
             row.",
        );
        p.out.push_str(
            "<table>\n<tr><th>Model</th><th>Cut-off</th><th>TP</th><th>FN</th><th>FP</th>\
             <th>TN</th></tr>\n",
        );
        for m in &r.models {
            let c = m.confusion;
            let _ = writeln!(
                p.out,
                "<tr><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td><td \
                 class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&m.name),
                m.cutoff,
                c.tp,
                c.fn_,
                c.fp,
                c.tn
            );
        }
        p.out.push_str("</table>\n");
    }
    p.section_end();
}

fn calibration(p: &mut Page, m: &Part<Report>) {
    p.section_start("calibration");
    if let Some(r) = models_or_missing(p, m, "Calibration") {
        p.figure(
            "calibration",
            "Observed response rate against mean predicted probability in decile groups of the \
             predictions (Hosmer-Lemeshow groups); dashed: ideal calibration.",
        );
        p.out.push_str(
            "<table>\n<tr><th>Model</th><th>Hosmer-Lemeshow χ²</th><th>df</th><th>p</th>\
             <th>Groups</th></tr>\n",
        );
        for m in &r.models {
            let h = &m.hosmer_lemeshow;
            let _ = writeln!(
                p.out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td \
                 class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&m.name),
                num(Some(h.statistic), 3),
                num(Some(h.df), 0),
                fmt_p(h.p_value),
                m.calibration.len()
            );
        }
        p.out.push_str("</table>\n");
        for m in &r.models {
            let _ = writeln!(
                p.out,
                "<details><summary>Calibration groups: {}</summary>\n<table>\n<tr><th>Group</th>\
                 <th>p range</th><th>n</th><th>Responders</th><th>Mean predicted</th>\
                 <th>Observed rate</th></tr>",
                esc(&m.name)
            );
            for (g, b) in m.calibration.iter().enumerate() {
                let _ = writeln!(
                    p.out,
                    "<tr><td class=\"num\">{}</td><td class=\"num\">{:.3}–{:.3}</td><td \
                     class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td>\
                     <td class=\"num\">{:.3}</td></tr>",
                    g + 1,
                    b.lower,
                    b.upper,
                    b.n,
                    b.n_pos,
                    b.mean_predicted,
                    b.observed
                );
            }
            p.out.push_str("</table></details>\n");
        }
        p.data_files(&["calibration.csv"]);
    }
    p.section_end();
}

fn decision_curve(p: &mut Page, m: &Part<Report>) {
    p.section_start("decision-curve");
    if let Some(r) = models_or_missing(p, m, "Decision curve") {
        p.figure(
            "decision_curve",
            "Net benefit against threshold probability (Vickers & Elkin); treat-all falls below \
             the plotted range at high thresholds and is cut at the axis.",
        );
        let at = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        p.out.push_str("<table>\n<tr><th>Threshold</th>");
        for m in &r.models {
            let _ = write!(p.out, "<th>{}</th>", esc(&m.name));
        }
        p.out
            .push_str("<th>Treat all</th><th>Treat none</th></tr>\n");
        for t in at {
            let find = |m: &ModelReport| {
                m.decision_curve
                    .iter()
                    .find(|d| (d.threshold - t).abs() < 1e-9)
                    .copied()
            };
            let Some(first) = find(&r.models[0]) else {
                continue;
            };
            let _ = write!(p.out, "<tr><td class=\"num\">{t:.2}</td>");
            for m in &r.models {
                let _ = write!(
                    p.out,
                    "<td class=\"num\">{}</td>",
                    num(find(m).map(|d| d.net_benefit), 4)
                );
            }
            let _ = writeln!(
                p.out,
                "<td class=\"num\">{}</td><td class=\"num\">0</td></tr>",
                num(Some(first.treat_all), 4)
            );
        }
        p.out.push_str("</table>\n");
        p.data_files(&["decision_curve.csv"]);
    }
    p.section_end();
}

// ---------------------------------------------------------------------------------------------
// 7. Survival

fn survival(p: &mut Page, r: &StudyReport) {
    p.section_start("survival");
    let parts = r.survival_parts();
    for (stem, heading, part) in [
        ("km_predicted", "By predicted group", &parts.predicted),
        ("km_observed", "By observed response", &parts.observed),
    ] {
        let _ = writeln!(p.out, "<h3>{}</h3>", esc(heading));
        match part {
            Part::Available(a) => survival_analysis(p, stem, a),
            other => p.out.push_str(&missing(
                &format!("Survival {}", heading.to_lowercase()),
                &other.why_missing().unwrap_or_default(),
            )),
        }
    }
    p.section_end();
}

fn survival_analysis(p: &mut Page, stem: &str, a: &SurvivalAnalysis) {
    let _ = writeln!(
        p.out,
        "<p>{} · {} · times released: {}.</p>",
        esc(&a.grouping),
        esc(&a.endpoint),
        esc(&a.time_resolution)
    );
    if a.curves.is_empty() {
        p.out.push_str(&missing(
            "Kaplan-Meier curves",
            "no group has any patient with a usable survival time",
        ));
    } else {
        p.figure(
            stem,
            "Kaplan-Meier estimates with pointwise 95% bands; + marks censoring; numbers at risk \
             under the time axis.",
        );
        p.out.push_str(
            "<table>\n<tr><th>Group</th><th>n</th><th>Events</th><th>Median (95% CI)</th>\
             <th>CI method</th></tr>\n",
        );
        for c in &a.curves {
            let _ = writeln!(
                p.out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td \
                 class=\"num\">{}</td><td class=\"small\">{}</td></tr>",
                esc(&c.label),
                c.n,
                c.events,
                esc(&median_label(c)),
                esc(c.median.ci_method.as_deref().unwrap_or(""))
            );
        }
        p.out.push_str("</table>\n<p class=\"small\">NR = not reached: the curve (or its confidence band) stays above 0.5.</p>\n");
    }
    match &a.log_rank {
        Part::Available(l) => {
            let _ = writeln!(
                p.out,
                "<p>Log-rank test: χ² = {:.3} on {} df, p = {} (observed / expected events: {} / \
                 {:.1} and {} / {:.1}).</p>",
                l.statistic,
                l.df,
                fmt_p(l.p_value),
                l.observed[0],
                l.expected[0],
                l.observed[1],
                l.expected[1]
            );
        }
        other => p.out.push_str(&missing(
            "Log-rank test",
            &other.why_missing().unwrap_or_default(),
        )),
    }
    match &a.cox {
        Part::Available(v) if !v.is_empty() => {
            let vs = match a.curves.as_slice() {
                [g0, g1, ..] => format!("{} vs {}", g1.label, g0.label),
                _ => "group 1 vs group 0".into(),
            };
            let _ = writeln!(
                p.out,
                "<table>\n<tr><th>Cox model</th><th>HR ({})</th><th>95% CI</th><th>Wald p</th>\
                 <th>Ties</th></tr>",
                esc(&vs)
            );
            for c in v {
                let h = &c.hazard_ratio;
                let _ = writeln!(
                    p.out,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">[{}, {}]</td><td \
                     class=\"num\">{}</td><td>{}</td></tr>",
                    esc(&c.model),
                    num(h.value, 3),
                    num(h.ci_lower, 3),
                    num(h.ci_upper, 3),
                    fmt_p(c.p_value),
                    esc(&c.ties)
                );
            }
            p.out.push_str("</table>\n");
        }
        Part::Available(_) => p
            .out
            .push_str(&missing("Cox model", "no Cox model was fitted")),
        other => p.out.push_str(&missing(
            "Cox model",
            &other.why_missing().unwrap_or_default(),
        )),
    }
    let file = format!("{stem}.csv");
    p.data_files(&[file.as_str()]);
}

// ---------------------------------------------------------------------------------------------
// 8–9. Sites, settings, notes

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn sites(p: &mut Page, s: &Part<Vec<SiteContribution>>) {
    p.section_start("sites");
    match s {
        Part::Available(v) => {
            p.out.push_str(
                "<table>\n<tr><th>Site</th><th>n</th><th>Messages sent</th><th>Bytes sent</th>\
                 <th>Suppressed / merged cells</th><th>Note</th></tr>\n",
            );
            for c in v {
                let _ = writeln!(
                    p.out,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td \
                     class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    esc(&c.site),
                    c.n.map_or_else(|| "not released".into(), |n| n.to_string()),
                    c.messages_sent,
                    human_bytes(c.bytes_sent),
                    c.suppressed_cells,
                    esc(c.note.as_deref().unwrap_or(""))
                );
            }
            let (n, msg, bytes, sup) = v.iter().fold((0u64, 0u64, 0u64, 0u64), |a, c| {
                (
                    a.0 + c.n.unwrap_or(0),
                    a.1 + c.messages_sent,
                    a.2 + c.bytes_sent,
                    a.3 + c.suppressed_cells,
                )
            });
            let _ = writeln!(
                p.out,
                "<tr><th>Total</th><th class=\"num\">{n}</th><th class=\"num\">{msg}</th><th \
                 class=\"num\">{}</th><th class=\"num\">{sup}</th><th></th></tr>\n</table>",
                human_bytes(bytes)
            );
            p.data_files(&["sites.csv"]);
        }
        other => p.out.push_str(&missing(
            "Per-site contributions",
            &other.why_missing().unwrap_or_default(),
        )),
    }
    p.section_end();
}

fn settings(p: &mut Page, r: &StudyReport) {
    p.section_start("settings");
    let s = &r.settings;
    p.out.push_str("<table>\n");
    let mut row = |k: &str, v: &str| {
        let _ = writeln!(p.out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    row("Study id", &s.study_id);
    row("Title", &s.title);
    row("Spec hash", &s.spec_hash);
    row(
        "Cross-validation",
        if s.cv_scheme.is_empty() {
            "not stated"
        } else {
            &s.cv_scheme
        },
    );
    for seed in &s.seeds {
        row(&format!("Seed: {}", seed.name), &seed.seed.to_string());
    }
    for kv in &s.policy {
        row(&format!("Policy: {}", kv.key), &kv.value);
    }
    for kv in &s.other {
        row(&kv.key, &kv.value);
    }
    if let Some(g) = &s.generated_at {
        row("Generated", g);
    }
    row(
        "Report schema",
        &format!("StudyReport v{}", r.schema_version),
    );
    p.out.push_str("</table>\n");
    p.data_files(&["metrics.json"]);
    p.section_end();
}

fn notes(p: &mut Page, r: &StudyReport) {
    let mut all: Vec<String> = r.notes.clone();
    if let Some(m) = r.metrics.get() {
        all.extend(m.notes.iter().cloned());
    }
    if all.is_empty() {
        return;
    }
    p.out
        .push_str("<section id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
    for n in all {
        let _ = writeln!(p.out, "<li>{}</li>", esc(&n));
    }
    p.out.push_str("</ul>\n</section>\n");
}
