//! Reading a request: the head (after any PROXY preamble), then the body preview.
//!
//! Every read goes through `Waits::until`, so shutdown, the lifetime ceiling and the head
//! deadline cut it short; what arrives is appended to the connection's pending bytes and
//! parsed after each read (`http::head::parse_head`).

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_uring::buf::BoundedBuf;

use super::{BodyPreview, Connection, HeadRead, Interrupt, READ_CHUNK};
use crate::http::client_addr;
use crate::http::head::{HeadStatus, ParsedHead, parse_head};
use crate::http::proxy_protocol::{self, Preamble};
use crate::server::drip::io_end_reason;

impl Connection {
    /// Reads until a complete head (and its body preview), a rejection, a timeout or the end.
    /// `pending` holds bytes already received; what follows the head stays in it.
    pub(super) async fn read_head(&mut self, pending: &mut Vec<u8>) -> HeadRead {
        let settings = &self.shared.settings;
        let first = self.requests == 0;
        let now = Instant::now();
        // The first request's head must be complete within request_timeout of accept; a later
        // one may idle for keepalive_timeout, then has request_timeout from its first byte.
        let idle_deadline = now + settings.keepalive_timeout;
        let mut head_deadline =
            (first || !pending.is_empty()).then(|| now + settings.request_timeout);
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        loop {
            if self.expect_preamble && !pending.is_empty() {
                match proxy_protocol::parse(pending) {
                    Preamble::Partial => {}
                    Preamble::Absent => self.expect_preamble = false,
                    Preamble::Complete { len, connection } => {
                        pending.drain(..len);
                        self.proxy = connection.map(Box::new);
                        self.expect_preamble = false;
                        self.carried_preamble = true;
                    }
                    Preamble::Invalid(reason) => {
                        return HeadRead::Rejected {
                            reason: format!("malformed_proxy_header: {reason}"),
                            received: std::mem::take(pending),
                        };
                    }
                }
            }
            if !pending.is_empty() && !self.expect_preamble {
                match parse_head(pending, settings.head_limits) {
                    HeadStatus::Partial => {}
                    HeadStatus::Complete(head) => {
                        pending.drain(..head.head_len);
                        let deadline = head_deadline.unwrap_or(idle_deadline);
                        let (body, body_consumed) =
                            self.read_body(&head, pending, scratch, deadline).await;
                        return HeadRead::Complete {
                            head,
                            body,
                            body_consumed,
                        };
                    }
                    HeadStatus::Rejected(rejection) => {
                        // A PROXY preamble we did not accept is worth naming as such.
                        let reason = if first && proxy_protocol::looks_like_proxy(pending) {
                            if client_addr::is_trusted(self.peer.ip(), &settings.trusted_proxies) {
                                "proxy_header_while_proxy_protocol_off".to_owned()
                            } else {
                                "proxy_header_from_untrusted_peer".to_owned()
                            }
                        } else {
                            rejection.to_string()
                        };
                        return HeadRead::Rejected {
                            reason,
                            received: std::mem::take(pending),
                        };
                    }
                }
            }
            let room = settings.head_limits.max_head - pending.len();
            scratch.clear();
            let read = self.stream.read(scratch.slice(..READ_CHUNK.min(room)));
            let deadline = head_deadline.unwrap_or(idle_deadline);
            let (result, slice) = match self.waits.until(read, Some(deadline)).await {
                Ok(done) => done,
                Err(Interrupt::Timeout) => {
                    return match (pending.is_empty(), first) {
                        (true, false) => HeadRead::Idle,
                        (true, true) => HeadRead::Rejected {
                            reason: "no_request".into(),
                            received: Vec::new(),
                        },
                        // A ClientHello cut short is still TLS (its record is awaited whole).
                        (false, _) if crate::fingerprint::tls::record_len(pending).is_some() => {
                            HeadRead::Rejected {
                                reason: "tls_client_hello".into(),
                                received: std::mem::take(pending),
                            }
                        }
                        (false, _) => HeadRead::Rejected {
                            reason: "head_timeout".into(),
                            received: std::mem::take(pending),
                        },
                    };
                }
                Err(interrupt) => {
                    return HeadRead::Interrupted {
                        interrupt,
                        received: std::mem::take(pending),
                    };
                }
            };
            scratch = slice.into_inner();
            match result {
                Ok(0) => {
                    return HeadRead::Gone {
                        reason: "client_closed",
                        received: std::mem::take(pending),
                    };
                }
                Ok(n) => {
                    pending.extend_from_slice(&scratch[..n]);
                    head_deadline.get_or_insert_with(|| Instant::now() + settings.request_timeout);
                }
                Err(error) => {
                    return HeadRead::Gone {
                        reason: io_end_reason(&error, "read_error"),
                        received: std::mem::take(pending),
                    };
                }
            }
        }
    }

    /// Reads up to `body_preview_bytes` of a declared body. Returns the preview and whether the
    /// whole body was consumed (so that the next bytes are the next request).
    pub(super) async fn read_body(
        &mut self,
        head: &ParsedHead,
        pending: &mut Vec<u8>,
        mut scratch: Vec<u8>,
        deadline: Instant,
    ) -> (BodyPreview, bool) {
        let limit = self.shared.settings.body_preview_bytes;
        let declared = head.content_length();
        let (want, consumable) = if head.is_chunked() {
            // Length unknown: keep what already arrived, and do not reuse the connection.
            (0, false)
        } else {
            match declared {
                None | Some(0) => (0, true),
                Some(length) => (length.min(limit as u64) as usize, length <= limit as u64),
            }
        };
        while pending.len() < want {
            scratch.clear();
            let read = self.stream.read(scratch.slice(..READ_CHUNK));
            match self.waits.until(read, Some(deadline)).await {
                Ok((Ok(n), slice)) if n > 0 => {
                    scratch = slice.into_inner();
                    pending.extend_from_slice(&scratch[..n]);
                }
                _ => break,
            }
        }
        // Chunked: whatever already arrived, up to the limit; otherwise the declared body's part.
        let cap = if head.is_chunked() { limit } else { want };
        let kept = pending.len().min(cap);
        let bytes = (kept > 0).then(|| pending[..kept].to_vec());
        let body_consumed =
            consumable && declared.is_none_or(|length| pending.len() as u64 >= length);
        if body_consumed {
            let length = declared.unwrap_or(0) as usize;
            pending.drain(..length);
        }
        let preview = BodyPreview {
            sha256: bytes.as_deref().map(sha256_hex),
            bytes,
            declared_length: declared,
        };
        (preview, body_consumed)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
