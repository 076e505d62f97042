//! Fuzzes the TLS ClientHello parser and JA4: never panics, a parsed hello lies inside its
//! first record, and its JA4 always has the published shape (`t` + 9 characters, `_`, 12 hex
//! digits, `_`, 12 hex digits).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tarpit::fingerprint::tls::{parse, record_len};

fuzz_target!(|data: &[u8]| {
    if let Some(hello) = parse(data) {
        assert!(record_len(data).is_some_and(|len| len <= data.len()));
        let ja4 = hello.ja4();
        let parts: Vec<&str> = ja4.split('_').collect();
        assert_eq!(parts.len(), 3, "{ja4}");
        assert_eq!(parts[0].len(), 10, "{ja4}");
        assert!(parts[1..].iter().all(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit())));
        let _ = hello.version_text();
    }
});
