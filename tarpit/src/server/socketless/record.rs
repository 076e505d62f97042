//! What a held flow's end puts on record: the response's end and the connection's close,
//! the same two events a socket hold sends, so a row reads alike however it was held.

use std::time::SystemTime;

use tokio::time::Instant;

use super::Holder;
use super::flow::{Flow, NO_FIN};
use crate::event::{ConnectionClosed, Event, ResponseEnd};
use crate::http::response::Framing;

impl Holder {
    /// Records the response's end and the connection's close, as a socket hold would.
    pub(super) fn record(&self, flow: &Flow, reason: &'static str, at: Instant) {
        let settings = &self.shared.settings;
        let payload = if flow.has(Flow::PAGE) {
            u64::from(flow.sent.min(self.source(flow).length()))
        } else {
            let framing = if flow.has(Flow::CHUNKED) {
                Framing::Chunked
            } else {
                Framing::Raw
            };
            let tick = settings.drip.tick_at(u64::from(flow.sent), framing);
            settings.drip.payload_through(tick)
        };
        let closed_at = SystemTime::now() - Instant::now().saturating_duration_since(at);
        let at_ms = self.ms(at);
        let seconds = |from_ms: u32| f64::from(at_ms.wrapping_sub(from_ms)) / 1000.0;
        self.shared.events.send(Event::ResponseEnd(ResponseEnd {
            conn_id: flow.conn_id,
            request_seq: flow.request_seq,
            closed_at,
            bytes_sent: payload,
            duration_s: seconds(flow.started_ms),
            end_reason: reason,
            client_fin_s: (flow.fin_ms != NO_FIN).then(|| f64::from(flow.fin_ms) / 1000.0),
        }));
        let connection_reason = if reason == "complete" {
            "response_complete"
        } else {
            reason
        };
        self.shared
            .events
            .send(Event::ConnectionClosed(ConnectionClosed {
                conn_id: flow.conn_id,
                closed_at,
                requests: flow.request_seq,
                bytes_sent: u64::from(flow.prior_bytes) + payload,
                duration_s: seconds(flow.accepted_ms),
                end_reason: connection_reason,
            }));
    }
}
