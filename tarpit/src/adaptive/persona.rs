//! The persona: what the adaptive mode answers. A 404 page for every path not listed (so a
//! scanner's wildcard probe, a random path, is told the truth a real server would tell), a
//! `200` page for any other request with a query string or a body (an injection target: a
//! scanner given a 404 there decides the target is gone and stops; the page echoes nothing the
//! client sent), and plausible bait pages for the paths scanners hunt (`/.env`, `/wp-login.php`, ...). The pages
//! are data files (`tarpit/assets/persona/`, documented in its `persona.toml`), replaceable
//! as a whole by `[adaptive] persona`.
//!
//! Loaded once at start; every body is leaked into a `&'static [u8]`, so a worker drips it
//! with the same zero-allocation slices as the drip mode.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;

use crate::canary::{Issuer, Slot};
use crate::http::head::HttpVersion;

/// The built-in persona's files, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    (
        "persona.toml",
        include_str!("../../assets/persona/persona.toml"),
    ),
    ("404.html", include_str!("../../assets/persona/404.html")),
    (
        "target.html",
        include_str!("../../assets/persona/target.html"),
    ),
    ("403.html", include_str!("../../assets/persona/403.html")),
    ("401.html", include_str!("../../assets/persona/401.html")),
    (
        "robots.txt",
        include_str!("../../assets/persona/robots.txt"),
    ),
    (
        "wp-login.html",
        include_str!("../../assets/persona/wp-login.html"),
    ),
    ("env.txt", include_str!("../../assets/persona/env.txt")),
    (
        "wp-config.txt",
        include_str!("../../assets/persona/wp-config.txt"),
    ),
    (
        "git-config.txt",
        include_str!("../../assets/persona/git-config.txt"),
    ),
    (
        "login.html",
        include_str!("../../assets/persona/login.html"),
    ),
];

/// A persona that cannot be used: names the file, the entry and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {entry}: {reason}")]
pub struct PersonaError {
    /// The file (under `built-in/` for the compiled-in persona).
    pub file: String,
    /// Which entry (`page[1]`) or `(file)`.
    pub entry: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    not_found: String,
    /// The page for requests with a query or a body on paths not listed (none: the 404).
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    page: Vec<PageSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageSpec {
    paths: Vec<String>,
    status: u16,
    content_type: String,
    file: String,
    /// A cookie set with the client's session token (canary tokens on).
    #[serde(default)]
    session_cookie: Option<String>,
    /// A Basic authentication realm (status 401).
    #[serde(default)]
    realm: Option<String>,
}

/// One answer: its status, content type and (padded) body.
#[derive(Debug)]
pub struct Page {
    /// The status code.
    pub status: u16,
    /// The content type.
    pub content_type: String,
    /// The body, padded to at least `max_response_bytes`.
    pub body: &'static [u8],
    /// Body bytes per drip tick, so a response that is never ended early lasts as many ticks
    /// as the drip's.
    pub per_tick: usize,
    /// The head's fixed end (`Content-Type` ... the blank line), for `Connection: close` and
    /// `keep-alive`: what a HEAD answer drips, a byte per tick.
    tails: [&'static [u8]; 2],
    /// The canary token slots: `{{canary:KIND}}` in the file, and the session cookie's.
    pub slots: &'static [Slot],
    /// The name of the cookie that carries the session token.
    session_cookie: Option<&'static str>,
}

impl Page {
    /// The fixed end of this page's head.
    pub fn tail(&self, keep_alive: bool) -> &'static [u8] {
        self.tails[usize::from(keep_alive)]
    }
}

/// The loaded persona.
#[derive(Debug)]
pub struct Persona {
    /// Page 0 is the not-found page.
    pages: Vec<Page>,
    /// Exact paths → page index.
    exact: HashMap<String, u16>,
    /// Path prefixes → page index, tried in file order.
    prefixes: Vec<(String, u16)>,
    /// The page for requests with a query or a body on unlisted paths.
    target: Option<u16>,
}

/// The status codes a page may have, with their reason phrases.
fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => return None,
    })
}

/// Checks that a persona file named `name` is a regular file inside `dir`: persona files are
/// served to the internet, so a relative name with `..`, an absolute path or a symbolic link
/// (to `/etc/shadow`, say) is refused at load. Why not, when refused.
fn confine(dir: &Path, name: &str) -> Result<(), String> {
    let relative = Path::new(name);
    let plain = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(format!(
            "{name:?} must be a path inside the persona directory (no absolute path, no ..)"
        ));
    }
    let path = dir.join(relative);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link: only regular files inside the persona directory are served",
            path.display()
        ));
    }
    let inside = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => false,
    };
    if !inside || !meta.is_file() {
        return Err(format!(
            "{} is not a regular file inside the persona directory",
            path.display()
        ));
    }
    Ok(())
}

impl Persona {
    /// The built-in persona, or the one in `dir`; bodies are padded to `min_body` bytes and
    /// dripped over `ticks` ticks.
    pub fn load(dir: Option<&Path>, min_body: usize, ticks: u64) -> Result<Self, PersonaError> {
        let read = |name: &str| -> Result<Vec<u8>, PersonaError> {
            match dir {
                Some(dir) => std::fs::read(dir.join(name)).map_err(|e| PersonaError {
                    file: dir.join(name).display().to_string(),
                    entry: "(file)".into(),
                    reason: format!("cannot read: {e}"),
                }),
                None => BUILTIN
                    .iter()
                    .find(|(file, _)| *file == name)
                    .map(|(_, text)| text.as_bytes().to_vec())
                    .ok_or_else(|| PersonaError {
                        file: format!("built-in/{name}"),
                        entry: "(file)".into(),
                        reason: "no such built-in file".into(),
                    }),
            }
        };
        let manifest_name = match dir {
            Some(dir) => dir.join("persona.toml").display().to_string(),
            None => "built-in/persona.toml".to_owned(),
        };
        let error = |entry: String, reason: String| PersonaError {
            file: manifest_name.clone(),
            entry,
            reason,
        };
        let text = String::from_utf8(read("persona.toml")?)
            .map_err(|_| error("(file)".into(), "not UTF-8".into()))?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| error("(file)".into(), e.message().to_owned()))?;
        let page = |entry: &str,
                    content_type: &str,
                    status: u16,
                    file: &str,
                    (session_cookie, realm): (Option<&str>, Option<&str>)|
         -> Result<Page, PersonaError> {
            if let Some(dir) = dir {
                confine(dir, file).map_err(|reason| error(entry.to_owned(), reason))?;
            }
            let (mut body, mut slots) = crate::canary::template::parse(&read(file)?)
                .map_err(|reason| error(entry.to_owned(), reason))?;
            if let Some(name) = session_cookie {
                let token_char =
                    |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if name.is_empty() || !name.chars().all(token_char) {
                    return Err(error(
                        entry.to_owned(),
                        format!("session_cookie {name:?} is not a cookie name"),
                    ));
                }
                slots.push(Slot::SESSION_COOKIE);
            }
            if body.len() < min_body {
                body.resize(min_body, b' ');
            }
            let per_tick = body.len().div_ceil(ticks.max(1) as usize).max(1);
            let challenge = match realm {
                Some(realm)
                    if status != 401
                        || realm.contains(['"', '\\'])
                        || realm.chars().any(char::is_control) =>
                {
                    return Err(error(
                        entry.to_owned(),
                        format!(
                            "realm {realm:?} needs status 401, and no quote, backslash or control character"
                        ),
                    ));
                }
                Some(realm) => format!("WWW-Authenticate: Basic realm=\"{realm}\"\r\n"),
                None => String::new(),
            };
            let tail = |connection: &str| -> &'static [u8] {
                let text = format!(
                    "{challenge}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                    body.len()
                );
                Box::leak(text.into_bytes().into_boxed_slice())
            };
            Ok(Page {
                status,
                content_type: content_type.to_owned(),
                tails: [tail("close"), tail("keep-alive")],
                body: Box::leak(body.into_boxed_slice()),
                per_tick,
                slots: Box::leak(slots.into_boxed_slice()),
                session_cookie: session_cookie.map(|name| &*Box::leak(name.into())),
            })
        };
        let mut persona = Persona {
            pages: vec![page(
                &format!("not_found ({})", manifest.not_found),
                "text/html",
                404,
                &manifest.not_found,
                (None, None),
            )?],
            exact: HashMap::new(),
            prefixes: Vec::new(),
            target: None,
        };
        if let Some(file) = &manifest.target {
            persona.target = Some(persona.pages.len() as u16);
            persona.pages.push(page(
                &format!("target ({file})"),
                "text/html; charset=UTF-8",
                200,
                file,
                (None, None),
            )?);
        }
        for (i, spec) in manifest.page.iter().enumerate() {
            let entry = format!("page[{i}] ({})", spec.file);
            if reason_phrase(spec.status).is_none() || spec.status == 404 {
                return Err(error(
                    entry,
                    format!("status must be 200, 401 or 403, got {}", spec.status),
                ));
            }
            if spec.content_type.is_empty() || spec.content_type.chars().any(char::is_control) {
                return Err(error(entry, "content_type must be a header value".into()));
            }
            if spec.paths.is_empty() {
                return Err(error(entry, "paths must not be empty".into()));
            }
            let index = persona.pages.len() as u16;
            for path in &spec.paths {
                if !path.starts_with('/') {
                    return Err(error(entry, format!("path {path:?} must start with /")));
                }
                match path.strip_suffix('*') {
                    Some(prefix) => persona.prefixes.push((prefix.to_owned(), index)),
                    None => {
                        persona.exact.insert(path.clone(), index);
                    }
                }
            }
            persona.pages.push(page(
                &entry,
                &spec.content_type,
                spec.status,
                &spec.file,
                (spec.session_cookie.as_deref(), spec.realm.as_deref()),
            )?);
        }
        Ok(persona)
    }

    /// The page for a request path: its bait page, else for a request with a query or a
    /// body (`has_input`) the target page, else the not-found page.
    pub fn page_for(&self, path: &str, has_input: bool) -> u16 {
        self.exact.get(path).copied().unwrap_or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, index)| *index)
                .or(self.target.filter(|_| has_input))
                .unwrap_or(0)
        })
    }

    /// A page by index.
    pub fn page(&self, index: u16) -> &Page {
        &self.pages[usize::from(index)]
    }

    /// What a response starts with, written at once: the head and the body's first slice, or
    /// for HEAD (`head_only`) the head's first lines and the first byte of its fixed end (the
    /// rest is dripped). Returns the bytes and how many of them the dripper counts as sent.
    /// Allocates once per response, like the drip's `head_with_first_tick`. With an `issuer`
    /// (canary tokens on), the client's tokens are in the slice and its session cookie is set.
    pub fn head_with_first_slice(
        &self,
        index: u16,
        (version, keep_alive, head_only): (HttpVersion, bool, bool),
        server: &str,
        now: SystemTime,
        issuer: Option<Issuer<'_>>,
    ) -> (Vec<u8>, u64) {
        let page = self.page(index);
        let mut bytes = self.head_start(index, version, server, now);
        if let (Some(issuer), Some(name)) = (issuer, page.session_cookie) {
            let token = issuer.token(&Slot::SESSION_COOKIE);
            bytes.extend_from_slice(format!("Set-Cookie: {name}=").as_bytes());
            bytes.extend_from_slice(token.as_bytes());
            bytes.extend_from_slice(b"; path=/; HttpOnly\r\n");
        }
        let tail = page.tail(keep_alive);
        if head_only {
            bytes.extend_from_slice(&tail[..1]);
            return (bytes, 1);
        }
        bytes.extend_from_slice(tail);
        let first = page.per_tick.min(page.body.len());
        let at = bytes.len();
        bytes.extend_from_slice(&page.body[..first]);
        if let Some(issuer) = issuer {
            issuer.write(page.slots, 0, &mut bytes[at..]);
        }
        (bytes, first as u64)
    }

    /// The head's first lines (status, `Server`, `Date`), the part that changes per response.
    pub fn head_start(
        &self,
        index: u16,
        version: HttpVersion,
        server: &str,
        now: SystemTime,
    ) -> Vec<u8> {
        let page = self.page(index);
        let reason = reason_phrase(page.status).unwrap_or("OK");
        let mut head = String::with_capacity(160);
        head.push_str(version.as_str());
        head.push_str(&format!(
            " {} {reason}\r\nServer: {server}\r\nDate: ",
            page.status
        ));
        head.push_str(&httpdate::fmt_http_date(now));
        head.push_str("\r\n");
        head.into_bytes()
    }
}

#[cfg(test)]
mod tests;
