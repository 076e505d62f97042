//! The persona: pages, padding, heads, operator personas and their errors, canary slots.

use super::*;

/// A persona manifest with one page, for `/bait`, answered `status` from `file`.
fn manifest(status: u16, file: &str) -> String {
    format!(
        "not_found = \"nf.html\"\n[[page]]\npaths = [\"/bait\"]\nstatus = {status}\n\
         content_type = \"text/plain\"\nfile = \"{file}\"\n"
    )
}

/// Writes `manifest` into `dir` and returns the error loading it gives.
fn load_error(dir: &std::path::Path, manifest: &str) -> String {
    std::fs::write(dir.join("persona.toml"), manifest).unwrap();
    Persona::load(Some(dir), 4, 4).unwrap_err().to_string()
}

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
    std::fs::write(dir.path().join("persona.toml"), manifest(200, "bait.txt")).unwrap();
    let persona = Persona::load(Some(dir.path()), 4, 4).unwrap();
    assert_eq!(
        persona.page(persona.page_for("/bait", false)).body,
        b"secret=1"
    );
    assert_eq!(persona.page(persona.page_for("/.env", false)).body, b"gone");
    let error = load_error(dir.path(), &manifest(302, "bait.txt"));
    assert!(
        error.contains("persona.toml: page[0] (bait.txt)"),
        "{error}"
    );
    assert!(error.contains("302"), "{error}");
    std::fs::remove_file(dir.path().join("bait.txt")).unwrap();
    let error = load_error(dir.path(), &manifest(200, "bait.txt"));
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
        let error = load_error(dir.path(), &manifest(200, file));
        assert!(
            error.contains(&format!("persona.toml: page[0] ({file})")),
            "{error}"
        );
        assert!(error.contains(why), "{file}: {error}");
    }
    std::fs::write(dir.path().join("persona.toml"), manifest(200, "sub/ok.txt")).unwrap();
    let persona = Persona::load(Some(dir.path()), 4, 4).unwrap();
    assert_eq!(persona.page(persona.page_for("/bait", false)).body, b"fine");
    std::fs::write(dir.path().join("persona.toml"), "not_found = \"link\"\n").unwrap();
    let error = Persona::load(Some(dir.path()), 4, 4)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not_found (link)"), "{error}");
}
