//! The metrics sink's counter handles, by series. `counter!` registers its series on every
//! call: the recorder hashes the name and labels, compares them with what it holds and
//! clones the key, and the labels themselves are built first (a port number formatted, a
//! tag copied). Under churn that was a sixth of the pipeline's time, nine times per
//! connection. Here a series is a few static strings and numbers, hashed into a map of the
//! sink's own; the recorder is asked once per series.
//!
//! The map grows as the recorder's registry does, one handle per series: the labels are
//! bounded sets (see the parent module), so no client can make it grow without end, nor
//! choose the keys. That is why the map hashes with foldhash (seeded per process) rather than
//! the standard library's SipHash, whose resistance to chosen keys these keys do not need:
//! SipHash was 8% of the pipeline's time under churn, hashing a series nine times per
//! connection (docs/benchmarks.md, tenth pass).

use std::collections::HashMap;
use std::sync::Arc;

use metrics::{Counter, Label};

/// A label's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Value {
    /// Fixed text (a reason, a mode, a method).
    Text(&'static str),
    /// A port, labelled by its number; `None` is `other`.
    Port(Option<u16>),
    /// A name from the rule set or the scanner catalogue (a tag, an organisation).
    Shared(Arc<str>),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Text(text) => (*text).to_owned(),
            Value::Port(Some(port)) => port.to_string(),
            Value::Port(None) => "other".to_owned(),
            Value::Shared(name) => name.to_string(),
        }
    }
}

/// One counter series: its name and up to two labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Series {
    name: &'static str,
    labels: [Option<(&'static str, Value)>; 2],
}

impl Series {
    /// A series without labels.
    pub(super) fn plain(name: &'static str) -> Self {
        Self {
            name,
            labels: [None, None],
        }
    }

    /// A series with one label.
    pub(super) fn labelled(name: &'static str, key: &'static str, value: Value) -> Self {
        Self {
            name,
            labels: [Some((key, value)), None],
        }
    }

    /// A series with two labels.
    pub(super) fn labelled_twice(
        name: &'static str,
        first: (&'static str, Value),
        second: (&'static str, Value),
    ) -> Self {
        Self {
            name,
            labels: [Some(first), Some(second)],
        }
    }

    fn register(&self) -> Counter {
        let labels: Vec<Label> = self
            .labels
            .iter()
            .flatten()
            .map(|(key, value)| Label::new(*key, value.text()))
            .collect();
        metrics::counter!(self.name, labels)
    }
}

/// Counter handles by series, registered with the recorder on first use.
#[derive(Debug, Default)]
pub(super) struct Counters {
    handles: HashMap<Series, Counter, foldhash::fast::RandomState>,
}

impl Counters {
    /// The handle of `series`.
    pub(super) fn get(&mut self, series: Series) -> &Counter {
        self.handles
            .entry(series)
            .or_insert_with_key(Series::register)
    }

    /// How many series have a handle.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }
}
