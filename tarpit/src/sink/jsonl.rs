//! The JSON lines forensic log: one object per event, field names equal to the SQLite columns,
//! timestamps in RFC 3339 UTC. Separate from the operational diagnostics, which go to stderr.
//!
//! Log rotation: after logrotate renames the file, SIGHUP asks the sink to reopen its path
//! ([`JsonLinesSink::reopen_flag`]); events written before the reopen are in the renamed file,
//! the rest in the new one, so nothing is lost across a rotation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Sink, SinkError};
use crate::event::Event;

/// Appends events to a JSON lines file, flushing after every batch.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    out: BufWriter<File>,
    reopen: Arc<AtomicBool>,
}

impl JsonLinesSink {
    /// Opens (creating file and directory when missing) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, Self::append(path)?),
            reopen: Arc::new(AtomicBool::new(false)),
        })
    }

    fn append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Set it (on SIGHUP) to make the sink reopen its path before its next batch.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write_batch(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.out.flush()?;
            self.out = BufWriter::with_capacity(64 * 1024, Self::append(&self.path)?);
            tracing::info!("reopened the JSON log {}", self.path.display());
        }
        for event in events {
            serde_json::to_writer(&mut self.out, event.as_ref()).map_err(std::io::Error::from)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionOpened;
    use std::time::SystemTime;

    #[test]
    fn one_object_per_line_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/t.log");
        for round in 0..2 {
            let mut sink = JsonLinesSink::open(&path).unwrap();
            let event = Arc::new(Event::ConnectionOpened(ConnectionOpened {
                conn_id: round,
                timestamp: SystemTime::now(),
                peer_ip: "127.0.0.1".parse().unwrap(),
                peer_port: 5000,
                local_ip: "127.0.0.1".parse().unwrap(),
                local_port: 8080,
                worker: 0,
            }));
            sink.write_batch(&[event]).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "connection_opened");
        assert_eq!(lines[1]["conn_id"], 1);
        assert_eq!(lines[1]["peer_port"], 5000);
    }
}
