//! The JSON lines forensic log: one object per event, field names equal to the SQLite columns,
//! timestamps in RFC 3339 UTC. Separate from the operational diagnostics, which go to stderr.
//!
//! Log rotation: after logrotate renames the file, SIGHUP asks the sink to reopen its path
//! ([`JsonLinesSink::reopen_flag`]); events written before the reopen are in the renamed file,
//! the rest in the new one, so nothing is lost across a rotation.
//!
//! A failed write (ENOSPC) must not leave half a line for the next one to be glued to: each
//! batch is serialised whole in memory, written with one `write_all`, and on failure the file is
//! cut back to the length it had before the batch, so the next line starts a line of its own.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Sink, SinkError};
use crate::event::Event;

/// Appends events to a JSON lines file, one write per batch.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    out: File,
    /// A failed batch could not be cut back: start the next one on a new line.
    needs_newline: bool,
    /// The batch being serialised, reused between batches.
    lines: Vec<u8>,
    reopen: Arc<AtomicBool>,
    /// How every line starts: `{"sensor_id":"<this sensor's id>"`, serialised once.
    line_start: Vec<u8>,
}

impl JsonLinesSink {
    /// Opens (creating file and directory when missing) `path` for appending; every line will
    /// carry `sensor_id`.
    pub fn open(path: &Path, sensor_id: &str) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let out = Self::append(path)?;
        let mut line_start = b"{\"sensor_id\":".to_vec();
        serde_json::to_writer(&mut line_start, sensor_id).map_err(std::io::Error::from)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            needs_newline: false,
            lines: Vec::with_capacity(64 * 1024),
            reopen: Arc::new(AtomicBool::new(false)),
            line_start,
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
            self.out = Self::append(&self.path)?;
            tracing::info!("reopened the JSON log {}", self.path.display());
        }
        self.lines.clear();
        if self.needs_newline {
            self.lines.push(b'\n');
        }
        // The give-up model's rows are the database's state, not a connection's record.
        for event in events
            .iter()
            .filter(|e| !matches!(e.as_ref(), Event::GiveUpFamilies(_)))
        {
            // The sensor's id, then the event's object with its opening brace made the comma
            // after the id: the line a struct flattening both would give, without serde's
            // flattening (which makes every field a map entry through a wrapper).
            self.lines.extend_from_slice(&self.line_start);
            let brace = self.lines.len();
            serde_json::to_writer(&mut self.lines, event.as_ref()).map_err(std::io::Error::from)?;
            debug_assert_eq!(self.lines[brace], b'{', "an event is a JSON object");
            self.lines[brace] = b',';
            self.lines.push(b'\n');
        }
        // Where a failed batch is cut back to (one fstat per batch; read now, so that a file
        // truncated by someone else is never extended).
        let before = self.out.metadata()?.len();
        if let Err(error) = self.out.write_all(&self.lines) {
            // Cut the partial batch off (shrinking needs no space); if even that fails, the
            // next batch starts on a new line.
            self.needs_newline = self.out.set_len(before).is_err();
            return Err(error.into());
        }
        self.needs_newline = false;
        // Big batches should not keep a big buffer for ever.
        if self.lines.capacity() > 1024 * 1024 {
            self.lines = Vec::with_capacity(64 * 1024);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConnectionOpened, RequestRecord, ResponseEnd};
    use std::time::SystemTime;

    #[test]
    fn one_object_per_line_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/t.log");
        for round in 0..2 {
            let mut sink = JsonLinesSink::open(&path, "sensor-a").unwrap();
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
        assert_eq!(lines[0]["sensor_id"], "sensor-a");
        assert_eq!(lines[1]["conn_id"], 1);
        assert_eq!(lines[1]["peer_port"], 5000);
    }

    #[test]
    fn a_line_is_the_sensor_id_then_the_events_fields_as_serde_would_flatten_them() {
        /// The line as the log wrote it before: a struct flattening the event after the id.
        #[derive(serde::Serialize)]
        struct Flattened<'a> {
            sensor_id: &'a str,
            #[serde(flatten)]
            event: &'a Event,
        }
        let sensor = "sensor \"a\"\n";
        let mut request = RequestRecord::sample("192.0.2.1".parse().unwrap());
        request.tags = vec![Arc::from("tool:curl")];
        request.user_agent = Some("quote \" and \u{1} and é".into());
        let events = [
            Event::ConnectionOpened(ConnectionOpened {
                conn_id: 1,
                timestamp: SystemTime::now(),
                peer_ip: "2001:db8::1".parse().unwrap(),
                peer_port: 5000,
                local_ip: "127.0.0.1".parse().unwrap(),
                local_port: 8080,
                worker: 0,
            }),
            Event::Request(Box::new(request)),
            Event::ResponseEnd(ResponseEnd {
                conn_id: 1,
                request_seq: 1,
                closed_at: SystemTime::now(),
                bytes_sent: 10,
                duration_s: 1.25,
                end_reason: "client_reset",
                client_fin_s: Some(0.5),
            }),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut sink = JsonLinesSink::open(&path, sensor).unwrap();
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        sink.write_batch(&events).unwrap();
        let mut expected = String::new();
        for event in &events {
            let line = Flattened {
                sensor_id: sensor,
                event: event.as_ref(),
            };
            expected.push_str(&serde_json::to_string(&line).unwrap());
            expected.push('\n');
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
    }
}
