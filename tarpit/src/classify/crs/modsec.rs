//! libmodsecurity v3, the reference engine of the OWASP Core Rule Set, opened at run time.
//!
//! Why `dlopen` (through `libloading`) and not the `modsecurity` crate: that crate links
//! libmodsecurity when the tarpit is built, so every build machine would need
//! `libmodsecurity-dev` (and its 1.x needs a newer libmodsecurity than Debian 12's 3.0.9). Opened
//! at run time, one binary builds anywhere and runs on sensors with or without the library: CRS
//! classification is on where Debian's `libmodsecurity3` is installed, and the start-up says so
//! and why not otherwise, as it does for the eBPF object. The C API used is the stable
//! `msc_*` subset of `modsecurity/modsecurity.h`, `rules_set.h` and `transaction.h` (libmodsecurity
//! 3.0.x), declared below by hand: fifteen functions.
//!
//! Which rules fired is read from the engine's log callback, one text line per rule that matched
//! with `log` in effect (`[id "942100"] ... [msg "..."]`), exactly what a ModSecurity deployment
//! logs; the anomaly score is logged by one rule of ours after the CRS's blocking evaluation.

use std::ffi::{CStr, CString, c_char, c_int, c_uchar, c_void};
use std::panic::AssertUnwindSafe;

use libloading::Library;

use super::catalog::Catalog;

/// Serialises creating and destroying engines: libmodsecurity's set-up and clean-up share global
/// state and are not safe to run on two threads at once (owasp-modsecurity/ModSecurity#3138; seen
/// here as a double free when tests loaded engines in parallel). Evaluation needs no lock.
static LIFECYCLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The library's file name, as Debian's `libmodsecurity3` installs it.
pub const LIBRARY: &str = "libmodsecurity.so.3";

/// Our rule that logs the anomaly score, placed after the CRS (a local rule id: the CRS
/// reserves 900,000-999,999 for itself).
pub const SCORE_RULE_ID: u32 = 99_990;

/// The text the score rule logs before the number.
const SCORE_MESSAGE: &str = "tarpit-crs-score ";

/// What one request made the engine log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Firings {
    /// Ids of the rules that fired (logged), in the order they fired, without repeats.
    pub rule_ids: Vec<u32>,
    /// The inbound anomaly score (`tx.anomaly_score`), 0 when nothing scored.
    pub score: u32,
}

/// The request as the engine is given it.
#[derive(Debug, Clone, Copy)]
pub struct EngineRequest<'a> {
    /// Client address and port (the engine's REMOTE_ADDR).
    pub client: (&'a str, u16),
    /// The method as sent.
    pub method: &'a str,
    /// The request target as sent: path, and `?query` when there is one.
    pub uri: &'a str,
    /// `1.1` or `1.0`.
    pub version: &'a str,
    /// Header lines as received.
    pub headers: &'a [(String, String)],
    /// The body (the preview the tarpit kept).
    pub body: &'a [u8],
}

/// libmodsecurity could not be opened, or refused the rules.
#[derive(Debug, thiserror::Error)]
pub enum ModSecurityError {
    /// The shared library or one of its functions is missing.
    #[error("cannot open {LIBRARY} (Debian's libmodsecurity3 package): {0}")]
    Library(String),
    /// The rules did not load; the engine's own message names the file and line.
    #[error("libmodsecurity refused the rules: {0}")]
    Rules(String),
}

type Msc = c_void;
type RulesSet = c_void;
type Transaction = c_void;
type LogCallback = extern "C" fn(*mut c_void, *const c_void);

/// The functions used, copied out of the library (valid while `_library` lives).
struct Api {
    init: unsafe extern "C" fn() -> *mut Msc,
    set_connector_info: unsafe extern "C" fn(*mut Msc, *const c_char),
    set_log_cb: unsafe extern "C" fn(*mut Msc, LogCallback),
    cleanup: unsafe extern "C" fn(*mut Msc),
    create_rules_set: unsafe extern "C" fn() -> *mut RulesSet,
    rules_add: unsafe extern "C" fn(*mut RulesSet, *const c_char, *mut *const c_char) -> c_int,
    rules_cleanup: unsafe extern "C" fn(*mut RulesSet) -> c_int,
    new_transaction_with_id:
        unsafe extern "C" fn(*mut Msc, *mut RulesSet, *mut c_char, *mut c_void) -> *mut Transaction,
    process_connection:
        unsafe extern "C" fn(*mut Transaction, *const c_char, c_int, *const c_char, c_int) -> c_int,
    process_uri: unsafe extern "C" fn(
        *mut Transaction,
        *const c_char,
        *const c_char,
        *const c_char,
    ) -> c_int,
    add_n_request_header: unsafe extern "C" fn(
        *mut Transaction,
        *const c_uchar,
        usize,
        *const c_uchar,
        usize,
    ) -> c_int,
    process_request_headers: unsafe extern "C" fn(*mut Transaction) -> c_int,
    append_request_body: unsafe extern "C" fn(*mut Transaction, *const c_uchar, usize) -> c_int,
    process_request_body: unsafe extern "C" fn(*mut Transaction) -> c_int,
    transaction_cleanup: unsafe extern "C" fn(*mut Transaction),
}

impl Api {
    fn load(library: &Library) -> Result<Self, ModSecurityError> {
        /// Copies one function pointer out of the library.
        unsafe fn get<T: Copy>(library: &Library, name: &str) -> Result<T, ModSecurityError> {
            // SAFETY: the caller names the function's real C signature in `T`.
            unsafe { library.get::<T>(name) }
                .map(|symbol| *symbol)
                .map_err(|e| ModSecurityError::Library(format!("{name}: {e}")))
        }
        // SAFETY: each type below is the function's declaration in libmodsecurity 3.0's headers.
        unsafe {
            Ok(Self {
                init: get(library, "msc_init")?,
                set_connector_info: get(library, "msc_set_connector_info")?,
                set_log_cb: get(library, "msc_set_log_cb")?,
                cleanup: get(library, "msc_cleanup")?,
                create_rules_set: get(library, "msc_create_rules_set")?,
                rules_add: get(library, "msc_rules_add")?,
                rules_cleanup: get(library, "msc_rules_cleanup")?,
                new_transaction_with_id: get(library, "msc_new_transaction_with_id")?,
                process_connection: get(library, "msc_process_connection")?,
                process_uri: get(library, "msc_process_uri")?,
                add_n_request_header: get(library, "msc_add_n_request_header")?,
                process_request_headers: get(library, "msc_process_request_headers")?,
                append_request_body: get(library, "msc_append_request_body")?,
                process_request_body: get(library, "msc_process_request_body")?,
                transaction_cleanup: get(library, "msc_transaction_cleanup")?,
            })
        }
    }
}

/// One engine with its rules loaded. Owned by one thread (the engine is not documented as
/// safe to share); moving it to the thread that uses it is fine.
pub struct ModSecurity {
    api: Api,
    msc: *mut Msc,
    rules: *mut RulesSet,
    /// Transactions started (their ids).
    transactions: u64,
    // Declared last: dropped after the pointers above are cleaned up (see `Drop`).
    _library: Library,
}

// SAFETY: the engine and rule set are only ever used by the one thread that owns this value;
// nothing in them is tied to the thread that created them.
unsafe impl Send for ModSecurity {}

impl std::fmt::Debug for ModSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModSecurity")
    }
}

impl ModSecurity {
    /// Opens the library and loads `rules` (ModSecurity configuration text: directives and
    /// `Include`s).
    pub fn load(rules: &str) -> Result<Self, ModSecurityError> {
        // SAFETY: opening libmodsecurity runs its static initialisers, which have no
        // preconditions.
        let library = unsafe { Library::new(LIBRARY) }
            .map_err(|e| ModSecurityError::Library(e.to_string()))?;
        let api = Api::load(&library)?;
        let text = CString::new(rules)
            .map_err(|_| ModSecurityError::Rules("the rules text holds a NUL byte".into()))?;
        let _serialised = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the functions are the library's; every pointer passed is valid for the call.
        unsafe {
            let msc = (api.init)();
            let connector = c"tarpit";
            (api.set_connector_info)(msc, connector.as_ptr());
            (api.set_log_cb)(msc, on_log);
            let set = (api.create_rules_set)();
            let mut error: *const c_char = std::ptr::null();
            if (api.rules_add)(set, text.as_ptr(), &mut error) < 0 {
                let reason = if error.is_null() {
                    "(no reason given)".to_owned()
                } else {
                    CStr::from_ptr(error).to_string_lossy().trim().to_owned()
                };
                (api.rules_cleanup)(set);
                (api.cleanup)(msc);
                return Err(ModSecurityError::Rules(reason));
            }
            Ok(Self {
                api,
                msc,
                rules: set,
                transactions: 0,
                _library: library,
            })
        }
    }

    /// Runs the request phases (1 and 2) on `request` and returns what fired.
    pub fn evaluate(&mut self, request: &EngineRequest<'_>, catalog: &Catalog) -> Firings {
        let mut collector = Collector {
            catalog,
            firings: Firings::default(),
        };
        let text = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        let (client, uri, method, version) = (
            text(request.client.0),
            text(request.uri),
            text(request.method),
            text(request.version),
        );
        let server = c"127.0.0.1";
        // Our own transaction id: without one the engine seeds a random device per request.
        self.transactions += 1;
        let mut id = CString::new(self.transactions.to_string())
            .unwrap_or_default()
            .into_bytes_with_nul();
        // SAFETY: `collector` outlives the transaction (cleaned up below, before it is
        // returned); every buffer passed lives across its call.
        unsafe {
            let tx = (self.api.new_transaction_with_id)(
                self.msc,
                self.rules,
                id.as_mut_ptr().cast(),
                (&mut collector as *mut Collector<'_>).cast(),
            );
            (self.api.process_connection)(
                tx,
                client.as_ptr(),
                c_int::from(request.client.1),
                server.as_ptr(),
                80,
            );
            (self.api.process_uri)(tx, uri.as_ptr(), method.as_ptr(), version.as_ptr());
            for (name, value) in request.headers {
                (self.api.add_n_request_header)(
                    tx,
                    name.as_ptr(),
                    name.len(),
                    value.as_ptr(),
                    value.len(),
                );
            }
            (self.api.process_request_headers)(tx);
            if !request.body.is_empty() {
                (self.api.append_request_body)(tx, request.body.as_ptr(), request.body.len());
            }
            (self.api.process_request_body)(tx);
            (self.api.transaction_cleanup)(tx);
        }
        collector.firings
    }
}

impl Drop for ModSecurity {
    fn drop(&mut self) {
        let _serialised = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: both were created by this library and are not used after this.
        unsafe {
            (self.api.rules_cleanup)(self.rules);
            (self.api.cleanup)(self.msc);
        }
    }
}

/// What the log callback writes into while one request is evaluated.
struct Collector<'a> {
    catalog: &'a Catalog,
    firings: Firings,
}

/// The engine's log callback: notes the rule ids (and our score rule's number) of each line.
/// Never unwinds into C.
extern "C" fn on_log(data: *mut c_void, message: *const c_void) {
    if data.is_null() || message.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is the `Collector` given to `msc_new_transaction` by `evaluate`, alive
        // and not otherwise borrowed while the engine runs; `message` is a C string.
        let (collector, line) = unsafe {
            (
                &mut *data.cast::<Collector<'_>>(),
                CStr::from_ptr(message.cast::<c_char>()).to_string_lossy(),
            )
        };
        note_line(collector, &line);
    }));
}

/// Reads one log line into the collector.
///
/// A line carries text the client chose (the matched value, `[data ...]`, `[uri ...]`), so a
/// client can write `[id "920000"]` into its own request. Every `[id "N"]` naming a rule of the
/// loaded set is taken: the real id is always among them, so a forged one cannot hide a rule
/// that fired; it can only add rules to the forger's own request, which sending the real
/// payload would do too. The score is read only from the score rule's own line, whose start
/// holds no client text (an action, not an operator, so no matched value).
fn note_line(collector: &mut Collector<'_>, line: &str) {
    const SCORE_LINE: &str = "ModSecurity: Warning.  [file \"";
    if line.starts_with(SCORE_LINE)
        && bracketed(line, "id").and_then(|id| id.parse::<u32>().ok()) == Some(SCORE_RULE_ID)
    {
        if let Some(score) = bracketed(line, "msg")
            .and_then(|m| m.strip_prefix(SCORE_MESSAGE))
            .and_then(|n| n.trim().parse().ok())
        {
            collector.firings.score = score;
        }
        return;
    }
    let mut rest = line;
    while let Some(at) = rest.find("[id \"") {
        rest = &rest[at + 5..];
        let Some(id) = rest.split('"').next().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if collector.catalog.contains(id) && !collector.firings.rule_ids.contains(&id) {
            collector.firings.rule_ids.push(id);
        }
    }
}

/// The value of the first `[name "value"]` in a log line.
fn bracketed<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("[{name} \"");
    let start = line.find(&key)? + key.len();
    let end = line[start..].find("\"]")?;
    Some(&line[start..start + end])
}

/// The rule that logs the score; goes after the CRS's `REQUEST-949` evaluation.
pub fn score_rule() -> String {
    format!(
        "SecAction \"id:{SCORE_RULE_ID},phase:2,pass,log,t:none,msg:'{SCORE_MESSAGE}%{{tx.anomaly_score}}'\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule set of two rules, 942100 and 920000.
    fn two_rules() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.add_text("SecRule ARGS \"@detectSQLi\" \"id:942100,phase:2,block\"\n");
        catalog.add_text("SecRule ARGS \"@rx x\" \"id:920000,phase:2,block\"\n");
        catalog
    }

    #[test]
    fn log_lines_give_rule_ids_once_and_the_score() {
        let catalog = two_rules();
        let mut collector = Collector {
            catalog: &catalog,
            firings: Firings::default(),
        };
        let c = &mut collector;
        note_line(
            c,
            "ModSecurity: Warning. detected SQLi using libinjection. [file \"/x/REQUEST-942.conf\"] \
             [line \"46\"] [id \"942100\"] [rev \"\"] [msg \"SQL Injection Attack Detected via \
             libinjection\"] [data \"Matched Data: s&1c found\"] [severity \"2\"]",
        );
        note_line(c, "[id \"942100\"] [msg \"again\"]");
        note_line(
            c,
            "ModSecurity: Warning.  [file \"<<reference missing>>\"] [line \"5\"] [id \"99990\"] \
             [rev \"\"] [msg \"tarpit-crs-score 13\"] [data \"\"]",
        );
        note_line(c, "a line without an id");
        assert_eq!(c.firings.rule_ids, [942100]);
        assert_eq!(c.firings.score, 13);
        assert!(score_rule().contains("id:99990,phase:2"));
    }

    #[test]
    fn a_forged_id_in_the_value_neither_hides_the_real_rule_nor_sets_the_score() {
        let catalog = two_rules();
        let mut c = Collector {
            catalog: &catalog,
            firings: Firings::default(),
        };
        // The client's value comes first in the line, before the engine's own fields.
        note_line(
            &mut c,
            "ModSecurity: Warning. Matched \"Operator `Rx' against variable `ARGS:q' (Value: \
             `x\" ) [file \"f\"] [line \"1\"] [id \"920000\"] [id \"99990\"] [msg \"tarpit-crs-score \
             0\"] [id \"123456\"]' ) [file \"/r/REQUEST-942.conf\"] [line \"46\"] [id \"942100\"] \
             [rev \"\"] [msg \"SQL Injection\"] [data \"[id \\\"1\\\"]\"]",
        );
        assert_eq!(c.firings.rule_ids, [920000, 942100]);
        assert_eq!(c.firings.score, 0);
    }
}
