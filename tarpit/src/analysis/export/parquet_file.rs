//! Parquet output through the `arrow` and `parquet` crates: typed columns (INTEGER as Int64,
//! REAL as Float64, TEXT as UTF-8, BLOB as binary), Snappy-compressed. Rows are gathered in
//! Arrow batches of [`BATCH_ROWS`] and row groups are capped at [`ROW_GROUP_ROWS`], which is
//! what bounds the memory an export of any size needs.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rusqlite::types::Value;

use super::{Column, ColumnType, RowWriter};

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group (the writer buffers one group).
const ROW_GROUP_ROWS: usize = 65_536;

/// One column's values for the current batch.
enum Builder {
    Integer(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
}

/// Writes a Parquet file.
pub struct ParquetWriter {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    names: Vec<String>,
    builders: Vec<Builder>,
    rows: usize,
}

impl ParquetWriter {
    /// Creates `out` with a schema from the columns' declared types (every column nullable).
    pub fn create(out: &Path, columns: &[Column]) -> Result<Self, String> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| {
                let data_type = match c.kind {
                    ColumnType::Integer => DataType::Int64,
                    ColumnType::Real => DataType::Float64,
                    ColumnType::Text => DataType::Utf8,
                    ColumnType::Blob => DataType::Binary,
                };
                Field::new(&c.name, data_type, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let file = File::create(out).map_err(|e| e.to_string())?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| e.to_string())?;
        let builders = columns
            .iter()
            .map(|c| match c.kind {
                ColumnType::Integer => Builder::Integer(Int64Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Real => Builder::Real(Float64Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Text => Builder::Text(StringBuilder::new()),
                ColumnType::Blob => Builder::Blob(BinaryBuilder::new()),
            })
            .collect();
        Ok(Self {
            writer,
            schema,
            names: columns.iter().map(|c| c.name.clone()).collect(),
            builders,
            rows: 0,
        })
    }

    /// Hands the gathered rows to the Parquet writer as one batch.
    fn flush_batch(&mut self) -> Result<(), String> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Integer(b) => Arc::new(b.finish()),
                    Builder::Real(b) => Arc::new(b.finish()),
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Blob(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| e.to_string())?;
        self.writer.write(&batch).map_err(|e| e.to_string())?;
        self.rows = 0;
        Ok(())
    }
}

impl RowWriter for ParquetWriter {
    fn write_row(&mut self, row: &[Value]) -> Result<(), String> {
        for ((builder, value), name) in self.builders.iter_mut().zip(row).zip(&self.names) {
            match (builder, value) {
                (Builder::Integer(b), Value::Null) => b.append_null(),
                (Builder::Real(b), Value::Null) => b.append_null(),
                (Builder::Text(b), Value::Null) => b.append_null(),
                (Builder::Blob(b), Value::Null) => b.append_null(),
                (Builder::Integer(b), Value::Integer(i)) => b.append_value(*i),
                (Builder::Real(b), Value::Real(f)) => b.append_value(*f),
                (Builder::Real(b), Value::Integer(i)) => b.append_value(*i as f64),
                (Builder::Text(b), Value::Text(t)) => b.append_value(t),
                (Builder::Blob(b), Value::Blob(bytes)) => b.append_value(bytes),
                (_, other) => {
                    return Err(format!(
                        "column {name}: a {:?} value does not fit its declared type",
                        other.data_type()
                    ));
                }
            }
        }
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), String> {
        self.flush_batch()?;
        self.writer.close().map(|_| ()).map_err(|e| e.to_string())
    }
}
