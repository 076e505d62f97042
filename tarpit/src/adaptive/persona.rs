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
mod tests {
    use super::*;

    #[test]
    fn random_paths_get_404_and_bait_gets_its_page() {
        let persona = Persona::load(None, 1200, 1200).unwrap();
        let random = persona.page(persona.page_for("/3f2a9c1e-0b7d-4e55-9a61-2c8d1f0e4b7a", false));
        assert_eq!(random.status, 404);
        assert!(
            random
                .body
                .starts_with(b"<html>\n<head><title>404 Not Found")
        );
        assert_eq!(
            persona
                .page(persona.page_for("/nmaplowercheck1764460000", false))
                .status,
            404
        );
        let env = persona.page(persona.page_for("/.env", false));
        assert_eq!(env.status, 200);
        assert!(env.body.starts_with(b"APP_NAME="));
        assert_eq!(
            persona
                .page(persona.page_for("/backup/db.sql", false))
                .status,
            403
        );
        assert_eq!(
            persona
                .page(persona.page_for("/wp-login.php", false))
                .status,
            200
        );
        // An injection target gets a believable page that echoes nothing; a random path with no
        // query still gets the 404 a wildcard probe needs.
        let target = persona.page(persona.page_for("/item.php", true));
        assert_eq!(target.status, 200);
        assert!(String::from_utf8_lossy(target.body).contains("<title>Search results"));
        assert_eq!(
            persona.page(persona.page_for("/item.php", false)).status,
            404
        );
        assert_eq!(persona.page(persona.page_for("/.env", true)).body, env.body);
        // Where harvested credentials are tried: a Basic realm.
        let staging = persona.page(persona.page_for("/staging/deploy", false));
        assert_eq!(staging.status, 401);
        let tail = String::from_utf8_lossy(staging.tail(false));
        assert!(
            tail.starts_with("WWW-Authenticate: Basic realm=\"Portal staging - ops only\"\r\n"),
            "{tail}"
        );
        // The login page's canary slots: the CSRF field, the reset link, the session cookie.
        let login = persona.page(persona.page_for("/admin/login", false));
        let kinds: Vec<_> = login
            .slots
            .iter()
            .map(|s| (s.kind.name(), s.ordinal))
            .collect();
        assert_eq!(kinds, [("link", 0), ("link", 1), ("session", u8::MAX)]);
    }

    #[test]
    fn bodies_are_padded_so_a_full_drip_lasts_as_long_as_the_drip() {
        let persona = Persona::load(None, 1200, 1200).unwrap();
        for index in 0..persona.pages.len() as u16 {
            let page = persona.page(index);
            assert!(page.body.len() >= 1200);
            let ticks = page.body.len().div_ceil(page.per_tick);
            assert!(ticks <= 1200 && ticks * 2 > 1200, "{ticks} ticks");
        }
    }

    #[test]
    fn the_head_is_well_formed_with_the_body_length() {
        let persona = Persona::load(None, 10, 10).unwrap();
        let index = persona.page_for("/nothing-here", false);
        let page = persona.page(index);
        let length = page.body.len();
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             Content-Type: text/html\r\nContent-Length: {length}\r\nConnection: keep-alive\r\n\r\n"
        );
        let at = |head_only| {
            let when = SystemTime::UNIX_EPOCH;
            persona.head_with_first_slice(
                index,
                (HttpVersion::Http11, true, head_only),
                "nginx",
                when,
                None,
            )
        };
        let (bytes, sent) = at(false);
        assert_eq!(bytes[..head.len()], *head.as_bytes());
        assert_eq!(bytes[head.len()..], page.body[..page.per_tick]);
        assert_eq!(sent, page.per_tick as u64);
        // HEAD: the head up to the first byte of its fixed end; the rest is dripped.
        let (bytes, sent) = at(true);
        let fixed_end = head.find("Content-Type").unwrap();
        assert_eq!(bytes, head.as_bytes()[..=fixed_end]);
        assert_eq!(sent, 1);
    }

    #[test]
    fn an_operator_persona_replaces_the_built_in_one_and_errors_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nf.html"), "gone").unwrap();
        std::fs::write(dir.path().join("bait.txt"), "secret=1").unwrap();
        std::fs::write(
            dir.path().join("persona.toml"),
            "not_found = \"nf.html\"\n[[page]]\npaths = [\"/bait\"]\nstatus = 200\n\
             content_type = \"text/plain\"\nfile = \"bait.txt\"\n",
        )
        .unwrap();
        let persona = Persona::load(Some(dir.path()), 4, 4).unwrap();
        assert_eq!(
            persona.page(persona.page_for("/bait", false)).body,
            b"secret=1"
        );
        assert_eq!(persona.page(persona.page_for("/.env", false)).body, b"gone");
        std::fs::write(
            dir.path().join("persona.toml"),
            "not_found = \"nf.html\"\n[[page]]\npaths = [\"/bait\"]\nstatus = 302\n\
             content_type = \"text/plain\"\nfile = \"bait.txt\"\n",
        )
        .unwrap();
        let error = Persona::load(Some(dir.path()), 4, 4)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("persona.toml: page[0] (bait.txt)"),
            "{error}"
        );
        assert!(error.contains("302"), "{error}");
        std::fs::remove_file(dir.path().join("bait.txt")).unwrap();
        std::fs::write(
            dir.path().join("persona.toml"),
            "not_found = \"nf.html\"\n[[page]]\npaths = [\"/bait\"]\nstatus = 200\n\
             content_type = \"text/plain\"\nfile = \"bait.txt\"\n",
        )
        .unwrap();
        let error = Persona::load(Some(dir.path()), 4, 4)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("persona.toml: page[0] (bait.txt): cannot read"),
            "{error}"
        );
    }

    #[test]
    fn persona_files_outside_the_directory_are_refused_naming_the_entry() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "root:x:0:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nf.html"), "gone").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linkdir")).unwrap();
        let secret = outside.path().join("secret").display().to_string();
        let manifest = |file: &str| {
            format!(
                "not_found = \"nf.html\"\n[[page]]\npaths = [\"/bait\"]\nstatus = 200\n\
                 content_type = \"text/plain\"\nfile = \"{file}\"\n"
            )
        };
        let outside_name = format!(
            "../{}/secret",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        for (file, why) in [
            (secret.as_str(), "no absolute path"),
            (outside_name.as_str(), "no absolute path, no .."),
            ("link", "symbolic link"),
            ("linkdir/secret", "not a regular file inside"),
            ("sub", "not a regular file"),
        ] {
            std::fs::write(dir.path().join("persona.toml"), manifest(file)).unwrap();
            let error = Persona::load(Some(dir.path()), 4, 4)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("persona.toml: page[0] ({file})")),
                "{error}"
            );
            assert!(error.contains(why), "{file}: {error}");
        }
        std::fs::write(dir.path().join("persona.toml"), manifest("sub/ok.txt")).unwrap();
        let persona = Persona::load(Some(dir.path()), 4, 4).unwrap();
        assert_eq!(persona.page(persona.page_for("/bait", false)).body, b"fine");
        std::fs::write(dir.path().join("persona.toml"), "not_found = \"link\"\n").unwrap();
        let error = Persona::load(Some(dir.path()), 4, 4)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not_found (link)"), "{error}");
    }
}
