//! JSON lines output: one object per row, keyed by column name, in table order; NULL is
//! `null` and BLOBs are lower-case hex strings.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rusqlite::types::Value;
use serde_json::Number;

use super::{Column, RowWriter};

/// Writes JSON lines.
pub struct JsonlWriter {
    out: BufWriter<File>,
    names: Vec<String>,
}

impl JsonlWriter {
    /// Creates `out`.
    pub fn create(out: &Path, columns: &[Column]) -> Result<Self, String> {
        let file = File::create(out).map_err(|e| e.to_string())?;
        Ok(Self {
            out: BufWriter::new(file),
            names: columns.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

impl RowWriter for JsonlWriter {
    fn write_row(&mut self, row: &[Value]) -> Result<(), String> {
        // Written field by field, so the keys keep the table's order.
        let mut line = Vec::with_capacity(1024);
        line.push(b'{');
        for (i, (name, value)) in self.names.iter().zip(row).enumerate() {
            if i > 0 {
                line.push(b',');
            }
            serde_json::to_writer(&mut line, name).map_err(|e| e.to_string())?;
            line.push(b':');
            let json = match value {
                Value::Null => serde_json::Value::Null,
                Value::Integer(i) => serde_json::Value::from(*i),
                Value::Real(f) => Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
                Value::Text(t) => serde_json::Value::from(t.as_str()),
                Value::Blob(b) => serde_json::Value::from(hex::encode(b)),
            };
            serde_json::to_writer(&mut line, &json).map_err(|e| e.to_string())?;
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(&line).map_err(|e| e.to_string())
    }

    fn finish(mut self: Box<Self>) -> Result<(), String> {
        self.out.flush().map_err(|e| e.to_string())
    }
}
