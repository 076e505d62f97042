//! Sharing with the community: what leaves the sensor for others, in their formats.
//!
//! Everything shared is built from one per-client [`clients::Summary`], so every format sends
//! the same fields and leaves out the same things:
//! - sent: the client's address (a keyed pseudonym with `--anonymize`), first and last seen,
//!   request count, ports dialled, the shared tags (`attack:`, `cve:`, `tool:`, `target:`,
//!   `crawler:`, `scanner:`), and up to five requests (method, path without its query string,
//!   User-Agent, port, time; texts scrubbed of addresses with `--anonymize`);
//! - never sent: the sensor's own addresses (no address the sensor answered on is ever a
//!   client), its labels and the operator's metadata, query strings, bodies, headers other
//!   than the User-Agent, and any request that carried one of the sensor's canary tokens (a
//!   shared token would let anyone join actors at will);
//! - left out by default: verified research scanners (`scanner:verified`, see
//!   `crate::scanner`), counted.
//!
//! Files: [`stix`] (STIX 2.1 bundle) and [`misp`] (MISP event), written by `tarpit export`.
//! Live outputs: [`push`] (DShield, TAXII 2.1, HPFeeds), reading SQLite after a cursor.

pub mod clients;
pub mod misp;
pub mod push;
pub mod rows;
pub mod stix;

pub use clients::{Summary, SummaryOptions, summarize};
