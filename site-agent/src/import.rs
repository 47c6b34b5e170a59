//! `site-agent import-features`: turn a feature table a site already has (a LIFEx or pyradiomics CSV
//! export) into the patient-level layout of `site-agent extract --manifest` (`patient_id,n_lesions,
//! <IBSI tag>…`), so sites without images can still join a study.
//!
//! Column mapping (via `radiomics::registry`):
//! * LIFEx: `registry::by_lifex` (exact name, else the name without its `[= …]` remark, spaces and
//!   case), converted to the IBSI value where the registry's relation is a fixed formula
//!   (`LifexRelation::lifex_to_ibsi`: kurtosis − 3, std², log10 entropy ÷ log10(2), mL × 1000).
//!   Columns whose relation is not a fixed formula (discretised HU statistics, Delaunay shape) stay
//!   unmapped, with the reason.
//! * pyradiomics: `registry::by_pyradiomics` (`original_<class>_<Feature>`), kurtosis − 3.
//! * Everything else (clinical columns, filtered-image features, names without an IBSI equivalent)
//!   is reported as unmapped with its reason, on stderr and in the summary.
//!
//! Several rows of one patient (a `lesion_id` column, or repeated patient ids) are lesions and are
//! aggregated like the extraction does (`radiomics::cohort::aggregate_patient`). Empty cells and
//! `NA`/`NaN` are missing values (NaN); any other non-number is an error naming row and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;

use radiomics::cohort::{AggregateError, LesionAggregation, aggregate_patient};
use radiomics::registry::{self, LifexRelation, PyradiomicsRelation};

/// `site-agent import-features` arguments.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  site-agent import-features --format pyradiomics --table export.csv --out features.csv
  site-agent import-features --format lifex --table lifex.csv --out features.csv \\
      --id-column PatientID --lesion-aggregation volume-weighted

Output: patient_id,n_lesions,<IBSI tag>... (the layout of `extract --manifest`). Unmapped columns
(clinical data, features without an IBSI equivalent) are listed on stderr with the reason.")]
pub struct ImportArgs {
    /// Export format.
    #[arg(long, value_parser = ["lifex", "pyradiomics"])]
    pub format: String,
    /// The exported CSV table (one row per lesion or per patient).
    #[arg(long, value_name = "CSV")]
    pub table: PathBuf,
    /// Output CSV.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Column holding the patient id.
    #[arg(long, default_value = "patient_id")]
    pub id_column: String,
    /// Column holding the lesion id (optional; rows of one patient are lesions either way).
    #[arg(long, default_value = "lesion_id")]
    pub lesion_column: String,
    /// Patient-level aggregation of several rows of one patient.
    #[arg(long, default_value = "mean", value_parser = ["mean", "volume-weighted", "largest"])]
    pub lesion_aggregation: String,
}

/// Source format of an imported table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Lifex,
    Pyradiomics,
}

/// How a source value becomes the IBSI value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conversion {
    Lifex(LifexRelation),
    Pyradiomics(PyradiomicsRelation),
}

impl Conversion {
    fn apply(self, v: f64) -> f64 {
        match self {
            Conversion::Lifex(r) => r.lifex_to_ibsi(v).unwrap_or(f64::NAN),
            Conversion::Pyradiomics(r) => r.to_ibsi(v),
        }
    }
}

/// A source column mapped to a registry tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub index: usize,
    pub column: String,
    pub tag: &'static str,
    pub conversion: Conversion,
}

/// Result of mapping a header.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    /// Mapped columns in registry order.
    pub mapped: Vec<Mapped>,
    /// (column, reason) for every other column except the id and lesion columns.
    pub unmapped: Vec<(String, String)>,
}

fn normalise_lifex(name: &str) -> String {
    let base = name.split('[').next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn lifex_lookup(column: &str) -> Option<(&'static registry::FeatureDef, registry::LifexColumn)> {
    let lookup = |column: &str| {
        registry::by_lifex(column).or_else(|| {
            let want = normalise_lifex(column);
            registry::all().find_map(|d| {
                d.lifex
                    .iter()
                    .find(|c| normalise_lifex(c.column) == want)
                    .map(|c| (d, *c))
            })
        })
    };
    lookup(column).or_else(|| {
        lifex7_aliases(column)
            .iter()
            .find_map(|alias| lookup(alias))
    })
}

/// LIFEx 7.x renamed the two intensity families (`shared/ibsi/lifex_features.md`):
/// `INTENSITY_BASED_*` was `CONVENTIONAL_*` and `INTENSITY-HISTOGRAM_*` was `DISCRETIZED_*`, with
/// the modality unit no longer spliced in (`INTENSITY_BASED_mean` = `CONVENTIONAL_HUmean` for CT).
/// The older names the registry knows, in the order to try.
fn lifex7_aliases(column: &str) -> Vec<String> {
    for (new, old) in [
        ("INTENSITY_BASED_", "CONVENTIONAL_"),
        ("INTENSITY-HISTOGRAM_", "DISCRETIZED_"),
    ] {
        if let Some(rest) = column.strip_prefix(new) {
            return vec![format!("{old}HU{rest}"), format!("{old}{rest}")];
        }
    }
    Vec::new()
}

/// Map a header's columns to registry tags (the id/lesion columns are skipped).
pub fn map_columns(format: Format, header: &[String], skip: &[usize]) -> ColumnMapping {
    let mut mapped: Vec<Mapped> = Vec::new();
    let mut unmapped = Vec::new();
    let mut by_tag: HashMap<&'static str, String> = HashMap::new();
    for (index, column) in header.iter().enumerate() {
        if skip.contains(&index) {
            continue;
        }
        let found: Result<(&'static str, Conversion), String> = match format {
            Format::Lifex => match lifex_lookup(column) {
                None => Err("not a LIFEx feature column known to the registry".into()),
                Some((def, c)) => match c.relation.lifex_to_ibsi(1.0) {
                    Some(_) => Ok((def.tag, Conversion::Lifex(c.relation))),
                    None => Err(format!(
                        "LIFEx value is not convertible to IBSI {} ({:?}: {})",
                        def.tag,
                        c.relation,
                        match c.relation {
                            LifexRelation::BinToIntensity =>
                                "discretised statistic in HU, needs the bin width and origin",
                            _ => "computed with a different method (Delaunay shape)",
                        }
                    )),
                },
            },
            Format::Pyradiomics => match registry::by_pyradiomics(column) {
                Err(reason) => Err(reason),
                Ok(p) => match p.tag {
                    Some(tag) => Ok((tag, Conversion::Pyradiomics(p.relation))),
                    None => Err(format!("no IBSI equivalent: {}", p.note)),
                },
            },
        };
        match found {
            Err(reason) => unmapped.push((column.clone(), reason)),
            Ok((tag, conversion)) => {
                if let Some(prev) = by_tag.get(tag) {
                    // Prefer the column that needs no conversion (e.g. ExcessKurtosis over Kurtosis).
                    let identical = matches!(
                        conversion,
                        Conversion::Lifex(LifexRelation::Identical)
                            | Conversion::Pyradiomics(PyradiomicsRelation::Identical)
                    );
                    let k = mapped.iter().position(|m| m.tag == tag).expect("mapped");
                    let prev_identical = matches!(
                        mapped[k].conversion,
                        Conversion::Lifex(LifexRelation::Identical)
                            | Conversion::Pyradiomics(PyradiomicsRelation::Identical)
                    );
                    if identical && !prev_identical {
                        unmapped.push((
                            prev.clone(),
                            format!("duplicate of column {column:?} (same IBSI feature {tag}, used instead)"),
                        ));
                        mapped[k] = Mapped {
                            index,
                            column: column.clone(),
                            tag,
                            conversion,
                        };
                        by_tag.insert(tag, column.clone());
                    } else {
                        unmapped.push((
                            column.clone(),
                            format!("duplicate of column {prev:?} (same IBSI feature {tag})"),
                        ));
                    }
                    continue;
                }
                by_tag.insert(tag, column.clone());
                mapped.push(Mapped {
                    index,
                    column: column.clone(),
                    tag,
                    conversion,
                });
            }
        }
    }
    // Registry order, the order extraction writes.
    let order: HashMap<&str, usize> = registry::all()
        .enumerate()
        .map(|(i, d)| (d.tag, i))
        .collect();
    mapped.sort_by_key(|m| order[m.tag]);
    ColumnMapping { mapped, unmapped }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {problem}")]
    Table { path: PathBuf, problem: String },
    #[error("{path}: no column maps to an IBSI feature (is --format right?); unmapped: {columns}")]
    NothingMapped { path: PathBuf, columns: String },
    #[error("patient {patient}: {source}")]
    Aggregate {
        patient: String,
        #[source]
        source: AggregateError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    Usage(String),
}

/// The imported patient table plus the column report.
#[derive(Debug, Clone)]
pub struct Imported {
    pub mapping: ColumnMapping,
    pub table: crate::extract::CohortTable,
    pub rows: usize,
}

fn parse_cell(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("na") || t.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    t.parse().ok()
}

/// Import a table already read from `path` (named in errors).
pub fn import_table(
    path: &Path,
    text: &str,
    format: Format,
    id_column: &str,
    lesion_column: &str,
    method: LesionAggregation,
) -> Result<Imported, ImportError> {
    let terr = |problem: String| ImportError::Table {
        path: path.to_path_buf(),
        problem,
    };
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| terr(format!("bad header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let id = header.iter().position(|h| h == id_column).ok_or_else(|| {
        terr(format!(
            "no patient id column {id_column:?} (pass --id-column); columns: {}",
            header
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let lesion = header.iter().position(|h| h == lesion_column);
    let skip: Vec<usize> = std::iter::once(id).chain(lesion).collect();
    let mapping = map_columns(format, &header, &skip);
    if mapping.mapped.is_empty() {
        return Err(ImportError::NothingMapped {
            path: path.to_path_buf(),
            columns: mapping
                .unmapped
                .iter()
                .take(10)
                .map(|u| u.0.clone())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut order: Vec<String> = Vec::new();
    let mut lesions: HashMap<String, Vec<Vec<(&'static str, f64)>>> = HashMap::new();
    let mut rows = 0;
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 2;
        let rec = rec.map_err(|e| terr(format!("line {line}: {e}")))?;
        let pid = rec.get(id).unwrap_or("").trim().to_string();
        if pid.is_empty() {
            return Err(terr(format!("line {line}: empty {id_column}")));
        }
        let mut values = Vec::with_capacity(mapping.mapped.len());
        for m in &mapping.mapped {
            let cell = rec.get(m.index).unwrap_or("");
            let v = parse_cell(cell).ok_or_else(|| {
                terr(format!(
                    "line {line}, column {:?}: {cell:?} is not a number",
                    m.column
                ))
            })?;
            values.push((m.tag, m.conversion.apply(v)));
        }
        lesions
            .entry(pid.clone())
            .or_insert_with(|| {
                order.push(pid.clone());
                Vec::new()
            })
            .push(values);
        rows += 1;
    }
    if rows == 0 {
        return Err(terr("no data rows after the header".into()));
    }
    let mut patients = Vec::new();
    for p in &order {
        let ls = &lesions[p];
        let agg = aggregate_patient(ls, method).map_err(|source| ImportError::Aggregate {
            patient: p.clone(),
            source,
        })?;
        patients.push((p.clone(), ls.len(), agg.into_iter().map(|x| x.1).collect()));
    }
    let table = crate::extract::CohortTable {
        tags: mapping.mapped.iter().map(|m| m.tag).collect(),
        patients,
        errors: Vec::new(),
    };
    Ok(Imported {
        mapping,
        table,
        rows,
    })
}

/// Run `site-agent import-features`; the summary goes to stderr.
pub fn run(a: &ImportArgs) -> Result<(), ImportError> {
    let format = match a.format.as_str() {
        "lifex" => Format::Lifex,
        "pyradiomics" => Format::Pyradiomics,
        f => {
            return Err(ImportError::Usage(format!(
                "--format {f:?}: lifex or pyradiomics"
            )));
        }
    };
    let method = LesionAggregation::parse(&a.lesion_aggregation).ok_or_else(|| {
        ImportError::Usage(format!("--lesion-aggregation {:?}", a.lesion_aggregation))
    })?;
    let text = std::fs::read_to_string(&a.table).map_err(|e| ImportError::Table {
        path: a.table.clone(),
        problem: format!("cannot read: {e}"),
    })?;
    let imp = import_table(
        &a.table,
        &text,
        format,
        &a.id_column,
        &a.lesion_column,
        method,
    )?;
    for (c, r) in &imp.mapping.unmapped {
        eprintln!("unmapped column {c:?}: {r}");
    }
    let tmp = a.out.with_extension("tmp-partial");
    let werr = |source| ImportError::Write {
        path: a.out.clone(),
        source,
    };
    std::fs::write(&tmp, imp.table.to_csv()).map_err(werr)?;
    std::fs::rename(&tmp, &a.out).map_err(werr)?;
    let converted = imp
        .mapping
        .mapped
        .iter()
        .filter(|m| {
            !matches!(
                m.conversion,
                Conversion::Lifex(LifexRelation::Identical)
                    | Conversion::Pyradiomics(PyradiomicsRelation::Identical)
            )
        })
        .map(|m| format!("{} -> {}", m.column, m.tag))
        .collect::<Vec<_>>();
    eprintln!(
        "imported {} rows -> {} patients; mapped {} of {} columns to IBSI tags ({} converted: {}); {} unmapped (listed above); wrote {}",
        imp.rows,
        imp.table.patients.len(),
        imp.mapping.mapped.len(),
        imp.mapping.mapped.len() + imp.mapping.unmapped.len(),
        converted.len(),
        if converted.is_empty() {
            "none".to_string()
        } else {
            converted.join(", ")
        },
        imp.mapping.unmapped.len(),
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(format: Format, text: &str, method: LesionAggregation) -> Imported {
        import_table(
            Path::new("t.csv"),
            text,
            format,
            "patient_id",
            "lesion_id",
            method,
        )
        .unwrap()
    }

    #[test]
    fn lifex_columns_are_converted_and_lesions_aggregated() {
        let text = "patient_id,lesion_id,CONVENTIONAL_HUmean,CONVENTIONAL_HUKurtosis,CONVENTIONAL_HUExcessKurtosis,CONVENTIONAL_HUstd,SHAPE_Volume(mL),GLCM_Entropy_log10,DISCRETIZED_HUmean,SHAPE_Sphericity [only for 3D ROI (nz>1)],GLCM_Homogeneity,age\n\
            P1,L1,10,3.5,0.5,2,1.5,0.30103,100,0.9,0.5,60\n\
            P1,L2,30,4.5,1.5,4,0.5,0.60206,100,0.9,0.7,60\n\
            P2,L1,5,NA,NA,1,2,,100,0.9,0.1,70\n";
        let imp = import(Format::Lifex, text, LesionAggregation::Mean);
        let tags: Vec<&str> = imp.mapping.mapped.iter().map(|m| m.tag).collect();
        assert_eq!(
            tags,
            vec![
                "morph_vol_approx",
                "stat_mean",
                "stat_var",
                "stat_kurt",
                "cm_joint_entr_3D_avg",
                "cm_inv_diff_3D_avg"
            ]
        );
        // ExcessKurtosis (identical) is used; Kurtosis (+3) is reported as a duplicate.
        let kurt = imp
            .mapping
            .mapped
            .iter()
            .find(|m| m.tag == "stat_kurt")
            .unwrap();
        assert_eq!(kurt.column, "CONVENTIONAL_HUExcessKurtosis");
        let reasons: HashMap<&str, &str> = imp
            .mapping
            .unmapped
            .iter()
            .map(|(c, r)| (c.as_str(), r.as_str()))
            .collect();
        assert!(reasons["CONVENTIONAL_HUKurtosis"].contains("duplicate"));
        assert!(reasons["DISCRETIZED_HUmean"].contains("bin width"));
        assert!(reasons["SHAPE_Sphericity [only for 3D ROI (nz>1)]"].contains("Delaunay"));
        assert!(reasons["age"].contains("not a LIFEx feature"));
        assert_eq!(reasons.len(), 4);
        let t = &imp.table;
        assert_eq!(imp.rows, 3);
        assert_eq!(t.patients.len(), 2);
        let (p1, n1, v1) = &t.patients[0];
        assert_eq!((p1.as_str(), *n1), ("P1", 2));
        // mL → mm³, std → variance, log10 entropy → log2; means over the two lesions.
        let get = |v: &[f64], tag: &str| v[t.tags.iter().position(|x| *x == tag).unwrap()];
        assert_eq!(get(v1, "morph_vol_approx"), 1000.0);
        assert_eq!(get(v1, "stat_mean"), 20.0);
        assert_eq!(get(v1, "stat_var"), 10.0);
        assert_eq!(get(v1, "stat_kurt"), 1.0);
        assert!((get(v1, "cm_joint_entr_3D_avg") - 1.5).abs() < 1e-5);
        let (_, _, v2) = &t.patients[1];
        assert!(get(v2, "stat_kurt").is_nan(), "NA is missing");
        // Volume-weighted falls back to the voxel-counting volume LIFEx reports.
        let w = import(Format::Lifex, text, LesionAggregation::VolumeWeighted);
        assert_eq!(
            get(&w.table.patients[0].2, "stat_mean"),
            (1.5 * 10.0 + 0.5 * 30.0) / 2.0
        );
    }

    #[test]
    fn lifex7_names_map_like_the_older_ones() {
        let text = "patient_id,INTENSITY_BASED_mean,INTENSITY_BASED_ExcessKurtosis,INTENSITY_BASED_std,INTENSITY-HISTOGRAM_HISTO_Entropy_log2,INTENSITY-HISTOGRAM_mean,INTENSITY_BASED_calciumAgatstonScore\n\
            P1,10,0.5,2,3,100,0\n";
        let imp = import(Format::Lifex, text, LesionAggregation::Mean);
        let tags: Vec<(&str, &str)> = imp
            .mapping
            .mapped
            .iter()
            .map(|m| (m.column.as_str(), m.tag))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("INTENSITY_BASED_mean", "stat_mean"),
                ("INTENSITY_BASED_std", "stat_var"),
                ("INTENSITY_BASED_ExcessKurtosis", "stat_kurt"),
                ("INTENSITY-HISTOGRAM_HISTO_Entropy_log2", "ih_entropy"),
            ]
        );
        assert_eq!(imp.table.patients[0].2[1], 4.0, "std 2 -> variance 4");
        let reasons: HashMap<&str, &str> = imp
            .mapping
            .unmapped
            .iter()
            .map(|(c, r)| (c.as_str(), r.as_str()))
            .collect();
        assert!(
            reasons["INTENSITY-HISTOGRAM_mean"].contains("bin width"),
            "{reasons:?}"
        );
        assert!(reasons["INTENSITY_BASED_calciumAgatstonScore"].contains("not a LIFEx feature"));
    }

    #[test]
    fn bad_tables_are_reported() {
        let e = import_table(
            Path::new("t.csv"),
            "id,CONVENTIONAL_HUmean\nP1,1\n",
            Format::Lifex,
            "patient_id",
            "lesion_id",
            LesionAggregation::Mean,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--id-column"), "{e}");
        let e = import_table(
            Path::new("t.csv"),
            "patient_id,CONVENTIONAL_HUmean\nP1,abc\n",
            Format::Lifex,
            "patient_id",
            "lesion_id",
            LesionAggregation::Mean,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("abc"),
            "{e}"
        );
        let e = import_table(
            Path::new("t.csv"),
            "patient_id,age\nP1,3\n",
            Format::Pyradiomics,
            "patient_id",
            "lesion_id",
            LesionAggregation::Mean,
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::NothingMapped { .. }), "{e}");
    }
}
