//! Reads the site's CSV table into memory (it never leaves the process).

use federation::table::{SiteTable, TableError};
use std::path::{Path, PathBuf};

/// A data-table problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {source}")]
    Table {
        path: PathBuf,
        source: Box<TableError>,
    },
}

/// Loads a CSV with a header row. `id_column` must exist (it makes error messages findable).
pub fn load_table(path: &Path, id_column: &str) -> Result<SiteTable, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let csv_err = |e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(csv_err)?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    let table_err = |source| DataError::Table {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    SiteTable::new(header, rows)
        .map_err(table_err)?
        .with_id_column(id_column)
        .map_err(table_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_rows_and_missing_id_column_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "patient_id,age\nP1,50\nP2,51,extra\n").unwrap();
        let e = load_table(&p, "patient_id").unwrap_err().to_string();
        assert!(e.contains("row 2 has 3 cells but the header has 2"), "{e}");
        std::fs::write(&p, "id,age\nP1,50\n").unwrap();
        let e = load_table(&p, "patient_id").unwrap_err().to_string();
        assert!(e.contains("column \"patient_id\" is missing"), "{e}");
        let e = load_table(&dir.path().join("nope.csv"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read"), "{e}");
    }
}
