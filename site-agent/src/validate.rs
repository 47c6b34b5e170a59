//! `site-agent validate`: checks everything a site is about to use (site.toml and its kit files,
//! the policy, the data table, the image manifest, the studies it agreed to) and lists **every**
//! problem in one run, each with where it is and how to fix it. It opens no network connection:
//! a site admin can run it before the firewall is even opened.
//!
//! Why collect instead of stopping at the first error: a site preparing a cohort of hundreds of
//! patients would otherwise fix one cell, rerun, fix the next; one list lets them fix (or hand to
//! the data manager) everything at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;
use federation::policy::SitePolicy;
use federation::study::{AnalysisSpec, StudySpec};
use federation::table::is_missing;
use radiomics::io::{self, IoError, MaskSelection};
use rayon::prelude::*;

use crate::config::{ConfigError, SiteConfig};

/// `site-agent validate` arguments.
#[derive(Debug, Clone, Args)]
#[command(after_help = VALIDATE_HELP)]
pub struct ValidateArgs {
    /// The site's configuration (it names the kit files, the policy and the data table).
    #[arg(long, value_name = "TOML")]
    pub config: PathBuf,
    /// The image manifest for `site-agent extract --manifest` (patient_id,lesion_id,image,mask
    /// [,mask_label][,roi]): every image and mask is read and checked.
    #[arg(long, value_name = "CSV")]
    pub manifest: Option<PathBuf>,
    /// A study file from the consortium (repeatable): its columns, labels and category levels
    /// are checked against the data table, and its hash against the policy.
    #[arg(long, value_name = "TOML")]
    pub study: Vec<PathBuf>,
    /// Only check that the manifest's files exist; do not read the images (fast on large cohorts).
    #[arg(long)]
    pub skip_images: bool,
}

const VALIDATE_HELP: &str = "\
Examples:
  site-agent validate --config site.toml
  site-agent validate --config site.toml --manifest data/lesions.csv --study study.toml

Checks site.toml and the files it names, the policy, the data table (patient ids, the label
column, numbers that do not parse), the manifest's images and masks (missing, unreadable,
grids that differ, empty masks) and what each --study needs. Every problem is listed with its
file, line and a fix. Nothing is sent: no network connection is opened.

Exit codes: 0 no problem found, 1 at least one problem (listed on stdout), 2 usage error.";

/// One thing wrong (or worth knowing): where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// File, and line/column/patient when there is one.
    pub location: String,
    pub problem: String,
    pub fix: String,
}

impl Finding {
    fn new(
        location: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            location: location.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The outcome of a validation run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was checked, one line each ("data/cohort.csv: 102 patients, 21 columns").
    pub checked: Vec<String>,
    /// Problems: the agent would refuse or mis-answer a study because of each. Exit code 1.
    pub problems: Vec<Finding>,
    /// Worth knowing, not wrong (e.g. patients without a lesion in the manifest).
    pub notes: Vec<Finding>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The text printed on stdout.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checked {
            s.push_str(&format!("checked {c}\n"));
        }
        if self.problems.is_empty() {
            s.push_str("ok: no problem found; nothing was sent\n");
        } else {
            s.push_str(&format!(
                "{} problem(s) found; nothing was sent:\n",
                self.problems.len()
            ));
            for (k, f) in self.problems.iter().enumerate() {
                s.push_str(&format!(
                    "  [{}] {}: {}\n      fix: {}\n",
                    k + 1,
                    f.location,
                    f.problem,
                    f.fix
                ));
            }
        }
        if !self.notes.is_empty() {
            s.push_str("notes:\n");
            for f in &self.notes {
                s.push_str(&format!("  - {}: {} ({})\n", f.location, f.problem, f.fix));
            }
        }
        s
    }
}

/// How many bad cells of one column are listed one by one; the rest are counted in one finding
/// (a wholly wrong column should not bury the other problems under a thousand lines).
const CELLS_LISTED_PER_COLUMN: usize = 10;

/// Runs every check. Never touches the network and writes nothing.
pub fn validate(a: &ValidateArgs) -> Report {
    let mut r = Report::default();
    let cfg = match SiteConfig::load_lenient(&a.config) {
        Ok((cfg, problems)) => {
            r.checked.push(format!("{}", a.config.display()));
            for p in problems {
                // The policy file gets its own, complete check below.
                let about_policy = matches!(&p,
                    ConfigError::Parse { path, .. } | ConfigError::Read { path, .. } if *path == cfg.policy_path);
                if !about_policy {
                    r.problems.push(config_finding(&p));
                }
            }
            Some(cfg)
        }
        Err(e) => {
            r.problems.push(config_finding(&e));
            None
        }
    };

    let policy = cfg
        .as_ref()
        .filter(|c| c.policy_path.exists())
        .and_then(|c| check_policy(&c.policy_path, &mut r));

    let studies: Vec<StudySpec> = a
        .study
        .iter()
        .filter_map(|p| load_study(p, policy.as_ref(), &mut r))
        .collect();

    let table = cfg
        .as_ref()
        .filter(|c| c.data_table.exists())
        .and_then(|c| check_table(c, &studies, &mut r));
    if let (Some(p), Some(t)) = (&policy, &table)
        && (t.ids.len() as u64) < p.min_count
        && let Some(c) = &cfg
    {
        r.problems.push(Finding::new(
            c.policy_path.display().to_string(),
            format!(
                "min_count = {} but the data table has only {} patients: every aggregate would be withheld",
                p.min_count,
                t.ids.len()
            ),
            "check that data_table is the whole cohort; min_count is the consortium's disclosure rule and should not be lowered to fit",
        ));
    }

    if let Some(m) = &a.manifest {
        check_manifest(m, a.skip_images, table.as_ref(), &mut r);
    }
    r
}

fn config_finding(e: &ConfigError) -> Finding {
    match e {
        ConfigError::Read { path, source } => Finding::new(
            path.display().to_string(),
            format!("cannot be read: {source}"),
            "check the path given to --config and the file's permissions",
        ),
        ConfigError::Parse { path, message } => Finding::new(
            path.display().to_string(),
            message.replace('\n', " "),
            "compare with examples/site.toml (keys and value types)",
        ),
        ConfigError::MissingFile {
            path,
            field,
            target,
        } => Finding::new(
            format!("{} field {field}", path.display()),
            format!("points at {}, which does not exist", target.display()),
            match *field {
                "ca_cert" | "cert" | "key" => {
                    "copy the file from the kit the consortium sent (relative paths are from site.toml's folder)"
                }
                "data_table" => {
                    "point data_table at the site's CSV (one row per patient; relative paths are from site.toml's folder)"
                }
                _ => {
                    "create the file or correct the path (relative paths are from site.toml's folder)"
                }
            },
        ),
        ConfigError::KeyExposed { path, source } => Finding::new(
            format!("{} field key", path.display()),
            source.to_string(),
            "chmod 600 the key file: whoever can read it can answer studies as this site",
        ),
    }
}

/// Checks every value of the policy file (not just the first bad one).
fn check_policy(path: &Path, r: &mut Report) -> Option<SitePolicy> {
    let loc = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                format!("cannot be read: {e}"),
                "check the file's permissions",
            ));
            return None;
        }
    };
    // Deserialise without `SitePolicy::validate` (which stops at the first impossible value).
    let p: SitePolicy = match toml::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                e.to_string().replace('\n', " "),
                "compare with examples/policy.toml: the keys are min_count, allow_all_studies, allowed_studies, release_predictions, share_models, max_params_per_row, require_secure_aggregation",
            ));
            return None;
        }
    };
    r.checked.push(format!("{loc}: min_count {}", p.min_count));
    if p.min_count == 0 {
        r.problems.push(Finding::new(
            format!("{loc} min_count"),
            "min_count = 0 would let aggregates over a single patient leave the site",
            "set min_count to the consortium's rule (5 is usual)",
        ));
    }
    if p.max_params_per_row.is_nan() || p.max_params_per_row <= 0.0 {
        r.problems.push(Finding::new(
            format!("{loc} max_params_per_row"),
            format!(
                "max_params_per_row = {} is impossible: no model could be fitted",
                p.max_params_per_row
            ),
            "use a positive ratio (0.33 is DataSHIELD's default) or inf to turn the guard off",
        ));
    }
    for h in &p.allowed_studies {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            r.problems.push(Finding::new(
                format!("{loc} allowed_studies"),
                format!("{h:?} is not a study hash (64 hexadecimal characters)"),
                "copy the hash that `aggregator submit` printed (or `site-agent validate --study` shows)",
            ));
        }
    }
    if !p.allow_all_studies && p.allowed_studies.is_empty() {
        r.notes.push(Finding::new(
            loc,
            "allowed_studies is empty and allow_all_studies is false: this site answers no study yet",
            "add each study's hash once your approval covers it",
        ));
    }
    Some(p)
}

/// Parses a study file; checks that the policy lets the site answer it.
fn load_study(path: &Path, policy: Option<&SitePolicy>, r: &mut Report) -> Option<StudySpec> {
    let loc = path.display().to_string();
    let spec = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot be read: {e}"))
        .and_then(|t| StudySpec::from_toml(&t).map_err(|e| e.to_string().replace('\n', " ")));
    match spec {
        Err(problem) => {
            r.problems.push(Finding::new(
                loc,
                problem,
                "ask the consortium's statistician for the study file exactly as submitted",
            ));
            None
        }
        Ok(s) => {
            let hash = s.hash();
            r.checked.push(format!(
                "{loc}: study {} ({}), hash {hash}",
                s.id,
                s.analysis.kind()
            ));
            if let Some(p) = policy
                && !p.allows_study(&hash)
            {
                r.problems.push(Finding::new(
                    loc,
                    format!(
                        "the policy does not allow study {} (hash {hash}): the agent will refuse it",
                        s.id
                    ),
                    format!(
                        "if the site's approval covers it, add \"{hash}\" to allowed_studies in the policy file"
                    ),
                ));
            }
            Some(s)
        }
    }
}

/// What a column must hold.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    /// Present; any text.
    Present,
    /// Numbers (or missing).
    Numeric,
    /// The binary outcome: one of the two labels (or missing).
    Label { positive: String, negative: String },
    /// One of the declared category levels (or missing).
    Levels(Vec<String>),
    /// An event indicator: 0 or 1 (or missing).
    Event,
}

/// Collects which columns the site config and the studies need, and why.
fn column_needs(cfg: &SiteConfig, studies: &[StudySpec]) -> BTreeMap<String, Vec<(Need, String)>> {
    let mut needs: BTreeMap<String, Vec<(Need, String)>> = BTreeMap::new();
    let mut add = |col: &str, need: Need, why: String| {
        needs.entry(col.to_string()).or_default().push((need, why));
    };
    add(
        &cfg.label_column,
        Need::Present,
        "site.toml label_column".into(),
    );
    for s in studies {
        let w = |what: &str| format!("study {} {what}", s.id);
        let label = |pos: &str, neg: &str| Need::Label {
            positive: pos.into(),
            negative: neg.into(),
        };
        match &s.analysis {
            AnalysisSpec::Table1(t) => {
                add(
                    &t.label_column,
                    label(&t.positive_label, &t.negative_label),
                    w("label_column"),
                );
                for v in &t.variables {
                    let n = if t.categorical.contains(v) {
                        Need::Present
                    } else {
                        Need::Numeric
                    };
                    add(v, n, w("variables"));
                }
            }
            AnalysisSpec::Harmonize(h) => {
                for f in &h.features {
                    add(f, Need::Numeric, w("features"));
                }
                for c in &h.covariates {
                    let n = if h.categorical.contains(c) {
                        Need::Present
                    } else {
                        Need::Numeric
                    };
                    add(c, n, w("covariates"));
                }
                if let Some(b) = &h.batch_column {
                    add(b, Need::Present, w("batch_column"));
                }
            }
            AnalysisSpec::Lasso(l) => {
                add(
                    &l.label_column,
                    label(&l.positive_label, &l.negative_label),
                    w("label_column"),
                );
                for f in &l.features {
                    add(f, Need::Numeric, w("features"));
                }
                if let Some(f) = &l.foldid_column {
                    add(f, Need::Numeric, w("foldid_column"));
                }
            }
            AnalysisSpec::Pipeline(p) => {
                add(
                    &p.label_column,
                    label(&p.positive_label, &p.negative_label),
                    w("label_column"),
                );
                for f in &p.features {
                    add(f, Need::Numeric, w("features"));
                }
                if let Some(b) = &p.batch_column {
                    add(b, Need::Present, w("batch_column"));
                }
                if let Some(cl) = &p.clinical {
                    for c in &cl.numeric {
                        add(c, Need::Numeric, w("clinical.numeric"));
                    }
                    for c in &cl.categorical {
                        add(
                            &c.column,
                            Need::Levels(c.levels.clone()),
                            w("clinical.categorical"),
                        );
                    }
                }
                if let Some(t) = &p.metrics.time_column {
                    add(t, Need::Numeric, w("metrics.time_column"));
                }
                if let Some(e) = &p.metrics.event_column {
                    add(e, Need::Event, w("metrics.event_column"));
                }
            }
        }
    }
    needs
}

/// The parts of the data table later checks use.
#[derive(Debug)]
struct TableFacts {
    /// Patient ids in table order (non-empty ones).
    ids: Vec<String>,
}

/// Reads the data table leniently and checks its shape, ids and the columns that are needed.
fn check_table(cfg: &SiteConfig, studies: &[StudySpec], r: &mut Report) -> Option<TableFacts> {
    let path = &cfg.data_table;
    let loc = path.display().to_string();
    let mut rdr = match csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
    {
        Ok(r) => r,
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                format!("cannot be read: {e}"),
                "check the file's permissions",
            ));
            return None;
        }
    };
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                format!("the header row cannot be read: {e}"),
                "save the table as UTF-8 CSV with one header row naming the columns",
            ));
            return None;
        }
    };
    if header.iter().all(|h| h.is_empty()) {
        r.problems.push(Finding::new(
            loc,
            "the table has no header row",
            "the first line must name the columns (patient_id, response, …)",
        ));
        return None;
    }
    let mut seen = BTreeSet::new();
    for h in &header {
        if !seen.insert(h.as_str()) {
            r.problems.push(Finding::new(
                format!("{loc} header"),
                format!("column {h:?} appears twice"),
                "rename or remove one of them",
            ));
        }
    }
    // (file line, cells) of every row; ragged rows are reported and left out of column checks.
    let mut rows: Vec<(u64, Vec<String>)> = Vec::new();
    for rec in rdr.records() {
        match rec {
            Err(e) => r.problems.push(Finding::new(
                format!("{loc} line {}", e.position().map_or(0, |p| p.line())),
                format!("unreadable row: {e}"),
                "fix the quoting or the encoding of this line (UTF-8)",
            )),
            Ok(rec) => {
                let line = rec.position().map_or(0, |p| p.line());
                if rec.len() != header.len() {
                    r.problems.push(Finding::new(
                        format!("{loc} line {line}"),
                        format!(
                            "{} cells but the header has {}",
                            rec.len(),
                            header.len()
                        ),
                        "a comma inside a value must be quoted (\"12,5\"); add or remove cells to match the header",
                    ));
                    continue;
                }
                rows.push((line, rec.iter().map(str::to_string).collect()));
            }
        }
    }
    r.checked.push(format!(
        "{loc}: {} patients, {} columns",
        rows.len(),
        header.len()
    ));
    if rows.is_empty() {
        r.problems.push(Finding::new(
            loc.clone(),
            "the table has no patient rows",
            "export the cohort with one row per patient below the header",
        ));
    }

    let col = |name: &str| header.iter().position(|h| h == name);
    let mut ids = Vec::new();
    let id_col = col(&cfg.id_column);
    match id_col {
        None => r.problems.push(missing_column(
            &loc,
            &cfg.id_column,
            &header,
            "site.toml id_column",
        )),
        Some(c) => {
            let mut first_line: HashMap<&str, u64> = HashMap::new();
            for (line, cells) in &rows {
                let id = cells[c].as_str();
                if id.is_empty() {
                    r.problems.push(Finding::new(
                        format!("{loc} line {line}"),
                        format!("the patient id ({}) is empty", cfg.id_column),
                        "give every row the site's pseudonymous patient id",
                    ));
                } else if let Some(prev) = first_line.insert(id, *line) {
                    r.problems.push(Finding::new(
                        format!("{loc} line {line}"),
                        format!("patient id {id:?} is also on line {prev}"),
                        "one row per patient: merge the rows or correct the id",
                    ));
                    first_line.insert(id, prev);
                } else {
                    ids.push(id.to_string());
                }
            }
        }
    }
    let patient = |cells: &[String]| match id_col {
        Some(c) if !cells[c].is_empty() => format!(" (patient {})", cells[c]),
        _ => String::new(),
    };

    let needs = column_needs(cfg, studies);
    for (name, reasons) in &needs {
        let Some(c) = col(name) else {
            let why: Vec<&str> = reasons.iter().map(|(_, w)| w.as_str()).collect();
            r.problems
                .push(missing_column(&loc, name, &header, &why.join(", ")));
            continue;
        };
        for (need, why) in reasons {
            let mut bad: Vec<(u64, String, String)> = Vec::new();
            for (line, cells) in &rows {
                let v = cells[c].trim();
                if is_missing(v) {
                    continue;
                }
                let ok = match need {
                    Need::Present => true,
                    Need::Numeric => v.parse::<f64>().is_ok_and(f64::is_finite),
                    Need::Label { positive, negative } => v == positive || v == negative,
                    Need::Levels(levels) => levels.iter().any(|l| l == v),
                    Need::Event => v == "0" || v == "1",
                };
                if !ok {
                    bad.push((*line, patient(cells), v.to_string()));
                }
            }
            let (problem, fix): (&str, String) = match need {
                Need::Present => continue,
                Need::Numeric => (
                    "is not a number",
                    "write a number with a dot as decimal separator and no unit; leave the cell empty or NA if unknown".into(),
                ),
                Need::Label { positive, negative } => (
                    "is neither outcome label",
                    format!(
                        "{why} expects {positive:?} (positive) or {negative:?} (negative); recode the value, or NA if unknown"
                    ),
                ),
                Need::Levels(levels) => (
                    "is not one of the declared levels",
                    format!(
                        "{why} declares {}; recode the value, or NA if unknown",
                        levels.join(", ")
                    ),
                ),
                Need::Event => (
                    "is not an event indicator",
                    "write 1 for progression or death, 0 for censored".into(),
                ),
            };
            report_cells(r, &loc, name, problem, &fix, &bad);
        }
    }

    // Columns no study declares: a column of numbers with a few stray texts ("12,5", "n/a ")
    // is almost always a data-entry slip that a later study would trip over.
    for (c, name) in header.iter().enumerate() {
        if needs.contains_key(name) || Some(c) == id_col {
            continue;
        }
        let values: Vec<(u64, String, &str)> = rows
            .iter()
            .filter(|(_, cells)| !is_missing(&cells[c]))
            .map(|(line, cells)| (*line, patient(cells), cells[c].as_str()))
            .collect();
        let numeric = values
            .iter()
            .filter(|(_, _, v)| v.parse::<f64>().is_ok_and(f64::is_finite))
            .count();
        let stray = values.len() - numeric;
        if stray > 0 && numeric >= 3 && numeric * 10 >= values.len() * 9 {
            let bad: Vec<(u64, String, String)> = values
                .iter()
                .filter(|(_, _, v)| !v.parse::<f64>().is_ok_and(f64::is_finite))
                .map(|(l, p, v)| (*l, p.clone(), v.to_string()))
                .collect();
            report_cells(
                r,
                &loc,
                name,
                "is not a number (the rest of the column is numeric)",
                "write a number with a dot as decimal separator and no unit; leave the cell empty or NA if unknown",
                &bad,
            );
        }
    }
    Some(TableFacts { ids })
}

fn report_cells(
    r: &mut Report,
    loc: &str,
    column: &str,
    problem: &str,
    fix: &str,
    bad: &[(u64, String, String)],
) {
    for (line, patient, v) in bad.iter().take(CELLS_LISTED_PER_COLUMN) {
        r.problems.push(Finding::new(
            format!("{loc} line {line}{patient} column {column:?}"),
            format!("{v:?} {problem}"),
            fix,
        ));
    }
    if bad.len() > CELLS_LISTED_PER_COLUMN {
        let lines: Vec<String> = bad[CELLS_LISTED_PER_COLUMN..]
            .iter()
            .map(|(l, _, _)| l.to_string())
            .collect();
        r.problems.push(Finding::new(
            format!("{loc} column {column:?}"),
            format!(
                "{} more cells {problem} (lines {})",
                lines.len(),
                lines.join(", ")
            ),
            fix,
        ));
    }
}

fn missing_column(loc: &str, name: &str, header: &[String], needed_by: &str) -> Finding {
    // A near miss (case, spaces, dashes) is the usual cause; name it.
    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase()
    };
    let near = header.iter().find(|h| norm(h) == norm(name));
    let fix = match near {
        Some(h) => format!("the table has {h:?}: rename that column to {name:?}"),
        None if name.starts_with("original_") || name.contains("_3D") => format!(
            "{name:?} is a radiomics feature: run `site-agent extract --manifest` and join its output to the table on the patient id"
        ),
        None => format!("add a column {name:?} (needed by {needed_by})"),
    };
    Finding::new(
        format!("{loc} header"),
        format!("column {name:?} is missing (needed by {needed_by})"),
        fix,
    )
}

/// One manifest row, as read (paths resolved against the manifest's folder).
struct Row {
    line: u64,
    patient: String,
    lesion: String,
    image: PathBuf,
    mask: PathBuf,
    sel: MaskSelection,
}

fn check_manifest(path: &Path, skip_images: bool, table: Option<&TableFacts>, r: &mut Report) {
    let loc = path.display().to_string();
    let mut rdr = match csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
    {
        Ok(x) => x,
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                format!("cannot be read: {e}"),
                "check the path given to --manifest",
            ));
            return;
        }
    };
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            r.problems.push(Finding::new(
                loc,
                format!("the header row cannot be read: {e}"),
                "save the manifest as UTF-8 CSV",
            ));
            return;
        }
    };
    let col = |n: &str| header.iter().position(|h| h == n);
    let mut missing = Vec::new();
    let mut need = |n: &'static str| {
        let c = col(n);
        if c.is_none() {
            missing.push(n);
        }
        c
    };
    let (ip, il, ii, im) = (
        need("patient_id"),
        need("lesion_id"),
        need("image"),
        need("mask"),
    );
    let (Some(ip), Some(il), Some(ii), Some(im)) = (ip, il, ii, im) else {
        r.problems.push(Finding::new(
            format!("{loc} header"),
            format!(
                "missing column(s) {} (found {})",
                missing.join(", "),
                header.join(",")
            ),
            "the header must be patient_id,lesion_id,image,mask[,mask_label][,roi]",
        ));
        return;
    };
    let (ilabel, iroi) = (col("mask_label"), col("roi"));
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                r.problems.push(Finding::new(
                    format!("{loc} line {}", e.position().map_or(0, |p| p.line())),
                    format!("unreadable row: {e}"),
                    "fix the quoting or the encoding of this line (UTF-8)",
                ));
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let at = format!("{loc} line {line}");
        let get = |i: usize| rec.get(i).unwrap_or("").to_string();
        let (patient, lesion, image, mask) = (get(ip), get(il), get(ii), get(im));
        let empty: Vec<&str> = [
            ("patient_id", &patient),
            ("lesion_id", &lesion),
            ("image", &image),
            ("mask", &mask),
        ]
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(n, _)| *n)
        .collect();
        if !empty.is_empty() {
            r.problems.push(Finding::new(
                at,
                format!("{} empty", empty.join(", ")),
                "fill patient_id, lesion_id, image and mask on every row (or delete the row)",
            ));
            continue;
        }
        if let Some(prev) = seen.insert((patient.clone(), lesion.clone()), line) {
            r.problems.push(Finding::new(
                at,
                format!("lesion {lesion} of patient {patient} is also on line {prev}"),
                "give each lesion of a patient its own lesion_id, or delete the repeated row",
            ));
            continue;
        }
        let label = match ilabel.map(get).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    r.problems.push(Finding::new(
                        at,
                        format!("mask_label {s:?} is not an integer"),
                        "write the label value of this lesion in the label map (e.g. 1), or leave it empty for every nonzero voxel",
                    ));
                    continue;
                }
            },
        };
        rows.push(Row {
            line,
            patient,
            lesion,
            image: base.join(image),
            mask: base.join(mask),
            sel: MaskSelection {
                label,
                roi: iroi.map(get).filter(|s| !s.is_empty()),
            },
        });
    }
    let n_images = rows
        .iter()
        .map(|x| x.image.as_path())
        .collect::<BTreeSet<_>>()
        .len();
    r.checked.push(format!(
        "{loc}: {} lesions, {n_images} images{}",
        rows.len(),
        if skip_images {
            " (files not read: --skip-images)"
        } else {
            ""
        }
    ));

    if let Some(t) = table {
        let ids: BTreeSet<&str> = t.ids.iter().map(String::as_str).collect();
        let mut reported = BTreeSet::new();
        for row in &rows {
            if !ids.contains(row.patient.as_str()) && reported.insert(row.patient.as_str()) {
                r.problems.push(Finding::new(
                    format!("{loc} line {}", row.line),
                    format!(
                        "patient {} has lesions but no row in the data table",
                        row.patient
                    ),
                    "add the patient to the data table, or correct the patient_id (ids must match exactly)",
                ));
            }
        }
        let in_manifest: BTreeSet<&str> = rows.iter().map(|x| x.patient.as_str()).collect();
        let without: Vec<&str> = t
            .ids
            .iter()
            .map(String::as_str)
            .filter(|id| !in_manifest.contains(id))
            .collect();
        if !without.is_empty() {
            r.notes.push(Finding::new(
                loc.clone(),
                format!(
                    "{} patient(s) of the data table have no lesion in the manifest: {}",
                    without.len(),
                    without.join(", ")
                ),
                "they get no radiomics features and are left out of studies that need them",
            ));
        }
    }

    // Missing files, once per file, naming every line that uses it.
    let mut uses: BTreeMap<&Path, Vec<u64>> = BTreeMap::new();
    for row in &rows {
        uses.entry(&row.image).or_default().push(row.line);
        uses.entry(&row.mask).or_default().push(row.line);
    }
    let exists: BTreeMap<&Path, bool> = uses.keys().map(|p| (*p, p.exists())).collect();
    for (p, lines) in &uses {
        if !exists[p] {
            r.problems.push(Finding::new(
                format!("{loc} line(s) {}", join_lines(lines)),
                format!("{} does not exist", p.display()),
                "correct the path (relative paths are from the manifest's folder) or copy the file there",
            ));
        }
    }
    if skip_images {
        return;
    }

    // Read each image once (in parallel), then every mask drawn on it.
    let mut by_image: BTreeMap<&Path, Vec<&Row>> = BTreeMap::new();
    for row in &rows {
        if exists[row.image.as_path()] {
            by_image.entry(&row.image).or_default().push(row);
        }
    }
    let groups: Vec<(&Path, Vec<&Row>)> = by_image.into_iter().collect();
    let found: Vec<Vec<Finding>> = groups
        .par_iter()
        .map(|(image_path, group)| {
            let image = match io::read_image(image_path) {
                Ok(i) => i,
                Err(e) => {
                    let lines: Vec<u64> = group.iter().map(|x| x.line).collect();
                    return vec![Finding::new(
                        format!("{loc} line(s) {} image", join_lines(&lines)),
                        e.to_string(),
                        io_fix(&e),
                    )];
                }
            };
            let dims: [usize; 3] = image.data.dim().into();
            group
                .par_iter()
                .filter(|row| exists[row.mask.as_path()])
                .filter_map(|row| {
                    io::read_mask(&row.mask, &image.geometry, dims, &row.sel)
                        .err()
                        .map(|e| {
                            Finding::new(
                                format!(
                                    "{loc} line {} (patient {}, lesion {}) mask {}",
                                    row.line,
                                    row.patient,
                                    row.lesion,
                                    row.mask.display()
                                ),
                                e.to_string(),
                                io_fix(&e),
                            )
                        })
                })
                .collect()
        })
        .collect();
    r.problems.extend(found.into_iter().flatten());
}

fn join_lines(lines: &[u64]) -> String {
    lines
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to fix an image or mask reading error.
fn io_fix(e: &IoError) -> String {
    match e {
        IoError::Io { .. } => "check the file's permissions and that the disk is readable".into(),
        IoError::Malformed { .. } | IoError::TooLarge { .. } => {
            "export the file again from the PACS or segmentation tool: it is damaged or not a single 3D volume".into()
        }
        IoError::Unsupported { hint, .. } => hint.clone(),
        IoError::UnknownFormat { .. } => {
            "convert to NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr), or give the DICOM series folder".into()
        }
        IoError::RoiNotFound { available, .. } => format!(
            "put one of {} in the manifest's roi column",
            available.join(", ")
        ),
        IoError::EmptyMask { .. } => {
            "check mask_label and that this mask was drawn on this image (a mask of another series or an unsaved segmentation is empty)".into()
        }
        IoError::GridMismatch { .. } => {
            "pair the mask with the image it was drawn on, or resample the mask onto the image grid (same size, spacing, origin and direction)".into()
        }
    }
}
