//! CSV output: a header row of column names, then one record per row. NULL is an empty field
//! and BLOBs are lower-case hex, so every spreadsheet and `csv` reader takes the file as is.
//!
//! Spreadsheet programs run a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
//! return as a formula, and scanners put such text in every header (`=cmd|' /C calc'!A0` as a
//! User-Agent). Unless raw output is asked for, such a text cell is prefixed with `'`, OWASP's
//! "CSV injection" rule, which spreadsheets show as the text itself. Numbers are ours, not the
//! client's, and are written as they are.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use rusqlite::types::Value;

use super::{Column, RowWriter};

/// Writes CSV records.
pub struct CsvWriter {
    writer: csv::Writer<BufWriter<File>>,
    record: Vec<String>,
    /// Write text cells exactly, formulas included (`--csv-raw`).
    raw: bool,
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP).
const FORMULA_STARTS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// `text` as a spreadsheet will show it and never run it.
pub fn neutralise_formula(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl CsvWriter {
    /// Creates `out` and writes the header row; `raw` turns formula neutralisation off.
    pub fn create(out: &Path, columns: &[Column], raw: bool) -> Result<Self, String> {
        let file = File::create(out).map_err(|e| e.to_string())?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer
            .write_record(columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            writer,
            record: Vec::with_capacity(columns.len()),
            raw,
        })
    }
}

impl RowWriter for CsvWriter {
    fn write_row(&mut self, row: &[Value]) -> Result<(), String> {
        self.record.clear();
        self.record.extend(row.iter().map(|value| match value {
            Value::Null => String::new(),
            Value::Integer(i) => i.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Text(t) if self.raw => t.clone(),
            Value::Text(t) => neutralise_formula(t).into_owned(),
            Value::Blob(b) => hex::encode(b),
        }));
        self.writer
            .write_record(&self.record)
            .map_err(|e| e.to_string())
    }

    fn finish(mut self: Box<Self>) -> Result<(), String> {
        self.writer.flush().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for formula in [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(neutralise_formula(formula), format!("'{formula}"));
        }
        for text in ["Mozilla/5.0", "", "'quoted", " =x", "GET"] {
            assert_eq!(neutralise_formula(text), text);
        }
    }
}
