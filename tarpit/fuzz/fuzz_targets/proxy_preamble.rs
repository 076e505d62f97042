//! Fuzzes the PROXY protocol (v1/v2) preamble parser: never panics, a complete header lies
//! inside the input and parses the same from its own bytes, and a prefix of a complete header
//! is never "absent" (it would be served as plain HTTP).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::http::proxy_protocol::{Preamble, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Preamble::Complete { len, .. } = &whole {
        assert!(*len <= data.len());
        assert_eq!(parse(&data[..*len]), whole);
        for cut in 1..*len {
            assert_ne!(
                parse(&data[..cut]),
                Preamble::Absent,
                "prefix {cut} of a header"
            );
        }
    }
});
