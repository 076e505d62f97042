//! `tarpit export`: the `events` table as a dataset file (CSV, JSON lines or Parquet), for
//! publication or for tools that do not read SQLite; or, for sharing with the community, a
//! summary per client as a STIX 2.1 bundle or a MISP event (`crate::share`).
//!
//! Rows are streamed: one SQLite statement, one row at a time into the chosen writer (Parquet
//! buffers one bounded row group), so exporting ten million rows needs no more memory than
//! exporting ten. With `--anonymize` every address is replaced by its keyed prefix-preserving
//! pseudonym ([`anonymize`]), including addresses inside headers, paths and previews, and the
//! operational reporting columns are dropped, as for the dataset published by the tool this
//! project replaces.

pub mod anonymize;
mod csv_file;
mod jsonl_file;
mod parquet_file;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::Value;

pub use anonymize::Anonymizer;

/// Columns left out of an anonymised export: they describe the sensor's own reporting, not the
/// scanners (the report history table is never exported at all).
pub const REPORTING_COLUMNS: &[&str] = &["reported_to_abuseipdb", "abuseipdb_report_timestamp"];

/// Columns that hold one address each (anonymised as addresses, the rest as text).
const ADDRESS_COLUMNS: &[&str] = &["client_ip", "peer_ip", "local_ip"];

/// Columns that hash received content: replaced by a keyed hash when anonymising.
const CONTENT_HASH_COLUMNS: &[&str] = &["body_sha256"];

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row; an empty field is NULL; BLOBs in hex.
    Csv,
    /// One JSON object per line; BLOBs in hex.
    Jsonl,
    /// Apache Parquet (typed columns, BLOBs as binary, Snappy-compressed).
    Parquet,
    /// A STIX 2.1 bundle: one summary per client (see `crate::share`).
    Stix,
    /// A MISP event: one summary per client (see `crate::share`).
    Misp,
}

/// What went wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database could not be read.
    #[error("reading {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database could not be opened or has a schema this build does not read.
    #[error(transparent)]
    Open(#[from] crate::db::DbError),
    /// The output could not be written.
    #[error("writing {path}: {reason}")]
    Write {
        /// The output file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Canary tokens cannot be replaced.
    #[error("{0}")]
    Canary(String),
    /// The anonymisation key is unusable.
    #[error(transparent)]
    Key(#[from] anonymize::KeyError),
}

/// The SQLite type a column was declared with, which decides its type in typed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// INTEGER.
    Integer,
    /// REAL.
    Real,
    /// TEXT (and anything undeclared).
    Text,
    /// BLOB.
    Blob,
}

/// One exported column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name in the table and in the file.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
}

/// Writes rows in one format; `finish` completes the file (footer, flush).
trait RowWriter {
    fn write_row(&mut self, row: &[Value]) -> Result<(), String>;
    fn finish(self: Box<Self>) -> Result<(), String>;
}

/// What to export, and how.
pub struct ExportOptions {
    /// The database to read.
    pub db: PathBuf,
    /// The file to write (replaced if it exists).
    pub out: PathBuf,
    /// Its format.
    pub format: Format,
    /// Only rows at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Replace addresses and drop the reporting columns.
    pub anonymizer: Option<Anonymizer>,
    /// The canary key's minter (`TARPIT_CANARY_KEY`), so an anonymised export can replace the
    /// tokens the database says were issued; an anonymised export of a database that issued
    /// tokens is refused without it.
    pub canary: Option<crate::canary::Minter>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// CSV only: write text cells exactly, even those a spreadsheet would run as a formula.
    pub csv_raw: bool,
    /// STIX and MISP only: include verified research scanners.
    pub include_scanners: bool,
}

/// What an export wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Rows written (clients, for STIX and MISP).
    pub rows: u64,
    /// Columns per row (0 for STIX and MISP).
    pub columns: usize,
    /// STIX and MISP: requests of verified research scanners left out.
    pub scanner_requests_left_out: u64,
}

/// The exported column that is not in `events`: the request's classification tags, sorted and
/// comma-joined (empty when it has none), from `request_tags`.
pub const TAGS_COLUMN: &str = "tags";

/// The SQL that fills [`TAGS_COLUMN`] for the current `events` row.
const TAGS_SELECT: &str = "(SELECT group_concat(tag, ',') FROM \
     (SELECT tag FROM request_tags WHERE request_tags.event_id = events.id ORDER BY tag))";

/// `events` columns that are bookkeeping, not data, and never exported: `changed_seq` numbers
/// changes for shipping (`crate::ship`).
const BOOKKEEPING_COLUMNS: &[&str] = &["changed_seq"];

/// The columns of `events` in table order, then [`TAGS_COLUMN`]; without the bookkeeping ones,
/// nor the reporting ones when anonymising.
pub fn columns(conn: &Connection, anonymized: bool) -> rusqlite::Result<Vec<Column>> {
    let mut stmt =
        conn.prepare("SELECT name, type FROM pragma_table_info('events') ORDER BY cid")?;
    let columns = stmt
        .query_map([], |r| {
            let name: String = r.get(0)?;
            let declared: String = r.get(1)?;
            let kind = match declared.to_ascii_uppercase().as_str() {
                "INTEGER" => ColumnType::Integer,
                "REAL" => ColumnType::Real,
                "BLOB" => ColumnType::Blob,
                _ => ColumnType::Text,
            };
            Ok(Column { name, kind })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(columns
        .into_iter()
        .filter(|c| !BOOKKEEPING_COLUMNS.contains(&c.name.as_str()))
        .filter(|c| !(anonymized && REPORTING_COLUMNS.contains(&c.name.as_str())))
        .chain(std::iter::once(Column {
            name: TAGS_COLUMN.to_owned(),
            kind: ColumnType::Text,
        }))
        .collect())
}

/// Exports the rows, streaming; returns how many were written.
pub fn export(mut options: ExportOptions) -> Result<ExportSummary, ExportError> {
    if crate::db::is_database_file(&options.db, &options.out) {
        return Err(ExportError::Write {
            path: options.out.display().to_string(),
            reason: "that is the database being exported".into(),
        });
    }
    let db_error = |source| ExportError::Database {
        path: options.db.display().to_string(),
        source,
    };
    let conn = crate::db::open_read_only(&options.db)?;
    if matches!(options.format, Format::Stix | Format::Misp) {
        return export_summary(&conn, &options);
    }
    let columns = columns(&conn, options.anonymizer.is_some()).map_err(db_error)?;
    let issued = issued_tokens(&conn).map_err(db_error)?;
    if let Some(anonymizer) = options.anonymizer.take() {
        let anonymizer = match (&options.canary, issued.is_empty()) {
            (_, true) => anonymizer,
            (Some(minter), false) => anonymizer.with_canary_tokens(minter, &issued),
            (None, false) => {
                return Err(ExportError::Canary(format!(
                    "the database issued {} canary tokens, which an anonymised export must \
                     replace: set {} (environment or .env) to the key they were issued with",
                    issued.len(),
                    crate::canary::KEY_VARIABLE
                )));
            }
        };
        options.anonymizer = Some(anonymizer);
    }
    let options = &options;
    let cutoff = options.since.clone().unwrap_or_default();
    let from = crate::db::events_from(options.since.is_some());
    let total: i64 = conn
        .query_row(
            &format!("SELECT COUNT(*) FROM {from} WHERE timestamp >= ?1"),
            [&cutoff],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    let write_error = |reason: String| ExportError::Write {
        path: options.out.display().to_string(),
        reason,
    };
    // Written beside the target and renamed at the end: an interrupted or failed export
    // never leaves a truncated file under the name a publisher will pick up.
    let partial = partial_path(&options.out);
    let result = write_rows(&conn, options, &columns, &partial, total as u64);
    match result {
        Ok(written) => {
            std::fs::rename(&partial, &options.out).map_err(|e| write_error(e.to_string()))?;
            Ok(ExportSummary {
                rows: written,
                columns: columns.len(),
                scanner_requests_left_out: 0,
            })
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// STIX or MISP: the per-client summary, written whole (it is one JSON document). Requests
/// that carried a canary token are never in it, so no canary key is needed.
fn export_summary(
    conn: &Connection,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let summary = crate::share::summarize(
        conn,
        &crate::share::SummaryOptions {
            since: options.since.clone(),
            include_scanners: options.include_scanners,
            anonymizer: options.anonymizer.as_ref(),
        },
    )
    .map_err(|source| ExportError::Database {
        path: options.db.display().to_string(),
        source,
    })?;
    let document = match options.format {
        Format::Stix => crate::share::stix::bundle(&summary),
        _ => crate::share::misp::event(&summary),
    };
    let write_error = |reason: String| ExportError::Write {
        path: options.out.display().to_string(),
        reason,
    };
    let partial = partial_path(&options.out);
    let text = serde_json::to_vec_pretty(&document).map_err(|e| write_error(e.to_string()))?;
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, &options.out))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            write_error(e.to_string())
        })?;
    Ok(ExportSummary {
        rows: summary.clients.len() as u64,
        columns: 0,
        scanner_requests_left_out: summary.scanner_requests_left_out,
    })
}

/// `FILE.partial` beside `FILE`.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Streams the selected rows into a new file at `path`; returns how many were written.
fn write_rows(
    conn: &Connection,
    options: &ExportOptions,
    columns: &[Column],
    path: &Path,
    total: u64,
) -> Result<u64, ExportError> {
    let db_error = |source| ExportError::Database {
        path: options.db.display().to_string(),
        source,
    };
    let write_error = |reason: String| ExportError::Write {
        path: options.out.display().to_string(),
        reason,
    };
    let progress = progress_bar(options.progress, total);
    let cutoff = options.since.clone().unwrap_or_default();
    let from = crate::db::events_from(options.since.is_some());
    let mut writer =
        open_writer(options.format, path, columns, options.csv_raw).map_err(write_error)?;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    // The order the chosen access path yields without sorting (a sort would hold every row):
    // the table's for a full export, the timestamp index's for a period.
    let order = if options.since.is_some() {
        "timestamp, id"
    } else {
        "id"
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {from} WHERE timestamp >= ?1 ORDER BY {order}",
            names
                .iter()
                .map(|&n| match n {
                    TAGS_COLUMN => TAGS_SELECT.to_owned(),
                    n => format!("\"{n}\""),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .map_err(db_error)?;
    let mut rows = stmt.query([&cutoff]).map_err(db_error)?;
    let mut row_values: Vec<Value> = Vec::with_capacity(columns.len());
    let body_length = columns.iter().position(|c| c.name == "body_length");
    let mut written = 0u64;
    while let Some(row) = rows.next().map_err(db_error)? {
        row_values.clear();
        for i in 0..columns.len() {
            row_values.push(row.get(i).map_err(db_error)?);
        }
        if let Some(anonymizer) = &options.anonymizer {
            // A body preview shorter than the declared body was cut at the preview boundary.
            let declared = body_length.and_then(|i| match row_values[i] {
                Value::Integer(n) => Some(n),
                _ => None,
            });
            for (value, column) in row_values.iter_mut().zip(columns) {
                let taken = std::mem::replace(value, Value::Null);
                *value = anonymize_value(anonymizer, &column.name, taken, declared);
            }
        }
        writer.write_row(&row_values).map_err(write_error)?;
        written += 1;
        if written.is_multiple_of(4096) {
            progress.set_position(written);
        }
    }
    writer.finish().map_err(write_error)?;
    progress.finish_and_clear();
    Ok(written)
}

/// Every canary token the database says was issued (by sensor, to a client, of a kind and slot).
fn issued_tokens(conn: &Connection) -> rusqlite::Result<Vec<(String, crate::canary::Recipient)>> {
    let mut statement =
        conn.prepare("SELECT sensor_id, client_ip, kind, ordinal FROM canary_tokens")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u8>(3)?,
        ))
    })?;
    let mut issued = Vec::new();
    for row in rows {
        let (sensor, client, kind, ordinal) = row?;
        if let Some(recipient) = crate::canary::Recipient::parse(&client, &kind, ordinal) {
            issued.push((sensor, recipient));
        }
    }
    Ok(issued)
}

/// A value with its addresses replaced: address columns as addresses, every text and BLOB
/// scrubbed in the form it was received (an address may hide in any header, path or
/// preview), content hashes keyed. `declared_body` is the row's `body_length`.
fn anonymize_value(
    anonymizer: &Anonymizer,
    column: &str,
    value: Value,
    declared_body: Option<i64>,
) -> Value {
    match value {
        Value::Text(text) if ADDRESS_COLUMNS.contains(&column) => {
            Value::Text(anonymizer.address_field(&text))
        }
        Value::Text(text) if CONTENT_HASH_COLUMNS.contains(&column) => {
            Value::Text(anonymizer.keyed_hash(&text))
        }
        Value::Text(text) if column == "raw_preview" => {
            Value::Text(anonymizer.scrub_preview(&text))
        }
        Value::Text(text) if column == "headers_json" => Value::Text(anonymizer.scrub_json(&text)),
        Value::Text(text) => match anonymizer.scrub(&text) {
            std::borrow::Cow::Borrowed(_) => Value::Text(text),
            std::borrow::Cow::Owned(scrubbed) => Value::Text(scrubbed),
        },
        Value::Blob(bytes) => {
            let truncated = declared_body.is_some_and(|n| n > bytes.len() as i64);
            Value::Blob(anonymizer.scrub_bytes(&bytes, truncated))
        }
        other => other,
    }
}

fn open_writer(
    format: Format,
    out: &Path,
    columns: &[Column],
    csv_raw: bool,
) -> Result<Box<dyn RowWriter>, String> {
    Ok(match format {
        Format::Csv => Box::new(csv_file::CsvWriter::create(out, columns, csv_raw)?),
        Format::Jsonl => Box::new(jsonl_file::JsonlWriter::create(out, columns)?),
        Format::Parquet => Box::new(parquet_file::ParquetWriter::create(out, columns)?),
        Format::Stix | Format::Misp => return Err("not a row format".into()),
    })
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal (a log, a pipe).
fn progress_bar(wanted: bool, total: u64) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} rows, {eta} left")
    {
        bar.set_style(style);
    }
    bar
}
