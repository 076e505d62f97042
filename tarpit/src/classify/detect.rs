//! libinjection, the reference detector for SQL injection (and XSS): it tokenises a value as
//! SQL (or HTML) and matches the token shape against fingerprints learned from real attacks,
//! which catches what a regex written by hand misses and ignores what merely looks like SQL.
//!
//! Through `libinjectionrs`, a BSD-3-Clause Rust port of libinjection that runs the C
//! library's own test files and was differentially fuzzed against it. The C bindings on
//! crates.io (`libinjection`, `libinjection-rs`) fetch the C sources from GitHub while
//! building, which an offline or reproducible build cannot do, and bring C into a process that
//! parses hostile input. A port may still panic on input its authors did not foresee; each call
//! is isolated with `catch_unwind`, so a panic is a "no" and is logged, never a lost event.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Values longer than this are judged on their first bytes (libinjection's cost is linear,
/// and a previewed body is bounded anyway).
const MAX_VALUE: usize = 4096;

/// A detector a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// `libinjection-sqli`.
    Sqli,
    /// `libinjection-xss`.
    Xss,
}

impl Detector {
    /// The detector a rule's `detector` key names.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "libinjection-sqli" => Some(Detector::Sqli),
            "libinjection-xss" => Some(Detector::Xss),
            _ => None,
        }
    }

    /// Whether `value` is an injection of this kind.
    pub fn detects(self, value: &str) -> bool {
        let bytes = &value.as_bytes()[..value.len().min(MAX_VALUE)];
        let verdict = catch_unwind(AssertUnwindSafe(|| match self {
            Detector::Sqli => libinjectionrs::detect_sqli(bytes).is_injection(),
            Detector::Xss => libinjectionrs::detect_xss(bytes).is_injection(),
        }));
        verdict.unwrap_or_else(|_| {
            tracing::warn!(detector = ?self, "libinjection panicked on a value; judged clean");
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libinjection_tells_injections_from_look_alikes() {
        for sqli in [
            "1' OR '1'='1",
            "1 UNION SELECT username,password FROM users--",
            "1;DROP TABLE x",
        ] {
            assert!(Detector::Sqli.detects(sqli), "{sqli}");
        }
        for clean in ["O'Reilly", "select a plan", "index.php", "1-2"] {
            assert!(!Detector::Sqli.detects(clean), "{clean}");
        }
        assert!(Detector::Xss.detects("<script>alert(1)</script>"));
        assert!(!Detector::Xss.detects("hello world"));
    }
}
