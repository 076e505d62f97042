//! Fuzzes the request-head reader with arbitrary bytes, delivered whole and split in two as a
//! socket might deliver them. Beyond "never panics", it checks the reader's promises: a
//! complete head lies inside the input and re-parses identically from its own bytes, limits
//! hold, and the log preview stays bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::http::head::{HeadLimits, HeadStatus, escape_preview, parse_head};

const LIMITS: HeadLimits = HeadLimits {
    max_head: 16 * 1024,
    max_headers: 100,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse_head(data, LIMITS);
    if let HeadStatus::Complete(head) = &whole {
        assert!(head.head_len <= data.len());
        assert!(head.head_len <= LIMITS.max_head);
        assert!(head.headers.len() <= LIMITS.max_headers);
        assert!(!head.method.is_empty());
        // The head alone says the same thing as the head plus whatever followed it.
        assert_eq!(parse_head(&data[..head.head_len], LIMITS), whole);
    }
    // A prefix of a complete head is never "complete" with a different length.
    if let Some(&split) = data.first() {
        let cut = usize::from(split) % (data.len() + 1);
        if let HeadStatus::Complete(prefix_head) = parse_head(&data[..cut], LIMITS) {
            if let HeadStatus::Complete(head) = &whole {
                assert_eq!(prefix_head.head_len, head.head_len);
            }
        }
    }
    let preview = escape_preview(data, 512);
    assert!(preview.len() <= 512 * 4 + 40);
});
