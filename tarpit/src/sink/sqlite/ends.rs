//! Where a batch's ends are: so that the SQLite sink can insert a row started in the batch
//! together with its end, instead of inserting it and then updating it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{ConnectionClosed, Event, ResponseEnd};

/// Where in a batch each request's response end and each connection's end are, so that a row
/// started in the batch can be inserted with its end.
#[derive(Debug, Default)]
pub(super) struct BatchEnds {
    responses: HashMap<(u64, u32), usize>,
    connections: HashMap<u64, usize>,
    /// By position in the batch: an end already written with the row it ends.
    pub(super) written: Vec<bool>,
}

impl BatchEnds {
    /// Indexes the ends in `events`; every end starts as not yet written.
    pub(super) fn index(&mut self, events: &[Arc<Event>]) {
        self.responses.clear();
        self.connections.clear();
        self.written.clear();
        self.written.resize(events.len(), false);
        for (at, event) in events.iter().enumerate() {
            match event.as_ref() {
                Event::ResponseEnd(e) => {
                    self.responses.insert((e.conn_id, e.request_seq), at);
                }
                Event::ConnectionClosed(e) => {
                    self.connections.insert(e.conn_id, at);
                }
                _ => {}
            }
        }
    }

    /// The end of the response to request `seq` of `conn_id`, when it comes later in `events`.
    pub(super) fn response<'a>(
        &self,
        events: &'a [Arc<Event>],
        at: usize,
        key: (u64, u32),
    ) -> Option<(usize, &'a ResponseEnd)> {
        let end = *self.responses.get(&key)?;
        match events[end].as_ref() {
            Event::ResponseEnd(e) if end > at => Some((end, e)),
            _ => None,
        }
    }

    /// The end of connection `conn_id`, when it comes later in `events`.
    pub(super) fn connection<'a>(
        &self,
        events: &'a [Arc<Event>],
        at: usize,
        conn_id: u64,
    ) -> Option<(usize, &'a ConnectionClosed)> {
        let end = *self.connections.get(&conn_id)?;
        match events[end].as_ref() {
            Event::ConnectionClosed(e) if end > at => Some((end, e)),
            _ => None,
        }
    }
}
