//! CSV output: a header row of column names, then one record per row. NULL is an empty field
//! and BLOBs are lower-case hex, so every spreadsheet and `csv` reader takes the file as is.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use rusqlite::types::Value;

use super::{Column, RowWriter};

/// Writes CSV records.
pub struct CsvWriter {
    writer: csv::Writer<BufWriter<File>>,
    record: Vec<String>,
}

impl CsvWriter {
    /// Creates `out` and writes the header row.
    pub fn create(out: &Path, columns: &[Column]) -> Result<Self, String> {
        let file = File::create(out).map_err(|e| e.to_string())?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer
            .write_record(columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            writer,
            record: Vec::with_capacity(columns.len()),
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
            Value::Text(t) => t.clone(),
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
