//! The tools that read the record afterwards: everything that opens the database after the
//! fact, read-only (or, for `classify`, re-tagging stored rows), apart from the server that
//! records. It imports the server's lower modules (the schema, `classify`, `ship::outbox`);
//! nothing in the server imports it (only `main.rs` and `cli.rs`, the edges, name its commands).
//!
//! - [`stats`] (`tarpit stats`), with its [`tag_stats`] and [`giveup_stats`] tables;
//! - [`ports_report`] (`tarpit ports`);
//! - [`report`] (`tarpit report`, one HTML page);
//! - [`export`] (`tarpit export`: CSV, JSON lines, Parquet, optionally anonymised);
//! - [`actors`] (`tarpit actors`: who is behind the addresses);
//! - [`retag`] (`tarpit classify`: re-tag stored rows with the current rules);
//! - [`text`]: the terminal-safe cell the text tables share.

pub mod actors;
pub mod export;
pub mod giveup_stats;
pub mod ports_report;
pub mod report;
pub mod retag;
pub mod stats;
pub mod tag_stats;
pub mod text;
