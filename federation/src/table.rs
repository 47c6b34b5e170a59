//! A site's patient table held in memory (parsed from CSV by the agent), with typed column access.
//!
//! Rows never leave the site; this type exists so that the site-side half of every analysis can be
//! a pure function of (table, task, policy).

use std::collections::BTreeSet;

/// Cell texts that mean "missing": empty, `NA` (R), `NaN`.
pub fn is_missing(cell: &str) -> bool {
    matches!(cell.trim(), "" | "NA" | "NaN" | "nan")
}

/// What is wrong with a table or a column request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    #[error("the table has no header row; the first line must name the columns")]
    NoHeader,
    #[error("column {0:?} appears twice in the header; rename one of them")]
    DuplicateColumn(String),
    #[error("row {row} has {found} cells but the header has {expected}; fix the row or the header")]
    Ragged {
        row: usize,
        found: usize,
        expected: usize,
    },
    #[error("column {column:?} is missing; the table has: {available}")]
    MissingColumn { column: String, available: String },
    #[error("column {column:?} row {row} (patient {patient}): {value:?} is not a number")]
    NotNumeric {
        column: String,
        row: usize,
        patient: String,
        value: String,
    },
    #[error(
        "label column {column:?} row {row} (patient {patient}): {value:?} is neither of the labels {expected}"
    )]
    BadLabel {
        column: String,
        row: usize,
        patient: String,
        value: String,
        /// The two accepted labels, e.g. `"1" (positive) / "0" (negative)`.
        expected: String,
    },
}

/// Header plus rows of cell texts. Row numbers in errors are 1-based data rows (the header is row 0)
/// so that they match what a spreadsheet shows minus one.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    id_column: Option<usize>,
}

impl SiteTable {
    /// Builds a table, checking for duplicate columns and ragged rows.
    pub fn new(header: Vec<String>, rows: Vec<Vec<String>>) -> Result<Self, TableError> {
        if header.is_empty() {
            return Err(TableError::NoHeader);
        }
        let mut seen = BTreeSet::new();
        for h in &header {
            if !seen.insert(h.as_str()) {
                return Err(TableError::DuplicateColumn(h.clone()));
            }
        }
        for (i, r) in rows.iter().enumerate() {
            if r.len() != header.len() {
                return Err(TableError::Ragged {
                    row: i + 1,
                    found: r.len(),
                    expected: header.len(),
                });
            }
        }
        Ok(Self {
            header,
            rows,
            id_column: None,
        })
    }

    /// Names the patient-id column, used only to make error messages findable at the site.
    pub fn with_id_column(mut self, name: &str) -> Result<Self, TableError> {
        self.id_column = Some(self.column_index(name)?);
        Ok(self)
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The patient-id column's name, when one was named ([`SiteTable::with_id_column`]).
    pub fn id_column_name(&self) -> Option<&str> {
        self.id_column.map(|c| self.header[c].as_str())
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    fn column_index(&self, name: &str) -> Result<usize, TableError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| TableError::MissingColumn {
                column: name.to_string(),
                available: self.header.join(", "),
            })
    }

    /// The patient id of a row (the id column's value, or `#<row number>` without one); used
    /// in local error messages and by the differencing guard, never sent.
    pub fn patient(&self, row: usize) -> String {
        match self.id_column {
            Some(c) => self.rows[row][c].clone(),
            None => format!("#{}", row + 1),
        }
    }

    /// Whether the column exists.
    pub fn has_column(&self, name: &str) -> bool {
        self.header.iter().any(|h| h == name)
    }

    /// A column's raw texts, `None` where missing.
    pub fn text_column(&self, name: &str) -> Result<Vec<Option<&str>>, TableError> {
        let c = self.column_index(name)?;
        Ok(self
            .rows
            .iter()
            .map(|r| {
                let v = r[c].trim();
                (!is_missing(v)).then_some(v)
            })
            .collect())
    }

    /// A numeric column, `None` where missing; any other non-number is an error naming the row.
    pub fn numeric_column(&self, name: &str) -> Result<Vec<Option<f64>>, TableError> {
        let c = self.column_index(name)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = r[c].trim();
                if is_missing(v) {
                    return Ok(None);
                }
                match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(Some(x)),
                    _ => Err(TableError::NotNumeric {
                        column: name.to_string(),
                        row: i + 1,
                        patient: self.patient(i),
                        value: v.to_string(),
                    }),
                }
            })
            .collect()
    }

    /// The binary outcome: `Some(true)` for the positive label, `Some(false)` for the negative,
    /// `None` where missing. Any other value is an error (a typo must not silently drop a patient).
    pub fn label_column(
        &self,
        name: &str,
        positive: &str,
        negative: &str,
    ) -> Result<Vec<Option<bool>>, TableError> {
        let c = self.column_index(name)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = r[c].trim();
                if is_missing(v) {
                    Ok(None)
                } else if v == positive {
                    Ok(Some(true))
                } else if v == negative {
                    Ok(Some(false))
                } else {
                    Err(TableError::BadLabel {
                        column: name.to_string(),
                        row: i + 1,
                        patient: self.patient(i),
                        value: v.to_string(),
                        expected: format!("{positive:?} (positive) / {negative:?} (negative)"),
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> SiteTable {
        SiteTable::new(
            vec!["id".into(), "age".into(), "resp".into()],
            vec![
                vec!["P1".into(), "50".into(), "1".into()],
                vec!["P2".into(), "".into(), "0".into()],
                vec!["P3".into(), "abc".into(), "yes".into()],
            ],
        )
        .unwrap()
        .with_id_column("id")
        .unwrap()
    }

    #[test]
    fn errors_name_the_column_row_and_patient() {
        let e = t().numeric_column("age").unwrap_err();
        assert_eq!(
            e.to_string(),
            "column \"age\" row 3 (patient P3): \"abc\" is not a number"
        );
        let e = t().numeric_column("weight").unwrap_err();
        assert!(e.to_string().contains("the table has: id, age, resp"));
        let e = t().label_column("resp", "1", "0").unwrap_err();
        assert!(matches!(e, TableError::BadLabel { row: 3, .. }));
    }

    #[test]
    fn structure_is_checked() {
        assert_eq!(
            SiteTable::new(vec!["a".into(), "a".into()], vec![]),
            Err(TableError::DuplicateColumn("a".into()))
        );
        assert!(matches!(
            SiteTable::new(vec!["a".into()], vec![vec!["1".into(), "2".into()]]),
            Err(TableError::Ragged { row: 1, .. })
        ));
    }
}
