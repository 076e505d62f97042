//! `tarpit export --anonymize` as a property: addresses generated at random, IPv4 and IPv6, in
//! many spellings and contexts (paths, queries, percent-encoded, headers, escapes, bodies,
//! garbage, cut at a preview boundary) go through the real server into every export format,
//! and no raw address from the input survives anywhere, in any spelling that was sent or in
//! its canonical form; nor does a hash of content that held one.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Tarpit;

/// A small deterministic generator (xorshift64): the same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    /// An IPv4 address with three-digit parts, so that its text cannot appear by chance
    /// inside a pseudonym or an unrelated number.
    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from([0u8; 4].map(|_| 100 + (self.next() % 150) as u8))
    }

    fn v6(&mut self) -> Ipv6Addr {
        let mut groups = [0u16; 8];
        for group in &mut groups {
            *group = 0x1000 + (self.next() % 0xe000) as u16;
        }
        // Runs of zeros now and then, for `::` compression.
        if self.next().is_multiple_of(2) {
            groups[3] = 0;
            groups[4] = 0;
        }
        Ipv6Addr::from(groups)
    }
}

/// The ways an address may be written that the export must still recognise.
fn spellings(address: IpAddr) -> Vec<String> {
    match address {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            vec![
                v4.to_string(),
                format!("{:03}.{:03}.{:03}.{:03}", o[0], o[1], o[2], o[3]),
                format!("{:03}.0{}.{}.{:04}", o[0], o[1], o[2], o[3]),
                format!(
                    "0x{:02x}.0x{:02X}.0x{:02x}.0x{:02x}",
                    o[0], o[1], o[2], o[3]
                ),
                format!("::ffff:{v4}"),
                // Compatibility spellings browsers and NFKC-normalising parsers read as ASCII.
                full_width(&v4.to_string()),
                v4.to_string().replace('.', "\u{3002}"),
                mathematical_digits(&v4.to_string()).replace('.', "\u{ff61}"),
            ]
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            vec![
                v6.to_string(),
                v6.to_string().to_uppercase(),
                s.iter()
                    .map(|g| format!("{g:04x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                full_width(&v6.to_string()),
            ]
        }
    }
}

/// `text` with ASCII digits, letters, dots and colons in their full-width forms (U+FF01..).
fn full_width(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '0'..='9' | 'a'..='z' | 'A'..='Z' | '.' | ':' => {
                char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap()
            }
            other => other,
        })
        .collect()
}

/// `text` with its digits as mathematical bold digits (U+1D7CE..).
fn mathematical_digits(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0x1D7CE + d).unwrap(),
            None => c,
        })
        .collect()
}

/// Every form of `address` whose presence in an export would give it away.
fn giveaways(address: IpAddr) -> Vec<String> {
    let mut forms = spellings(address);
    if let IpAddr::V6(v6) = address {
        forms.push(
            v6.segments()
                .iter()
                .map(|g| format!("{g:x}"))
                .collect::<Vec<_>>()
                .join(":"),
        );
    }
    forms
}

fn percent_encode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// One request carrying `spelled` (a spelling of an address) in the context `case` picks.
fn request(case: u64, spelled: &str, rng: &mut Rng) -> Vec<u8> {
    let glue = *rng.pick(&["", "_", "x", "proxy", "-", "9", "cafe"]);
    match case % 9 {
        0 => format!("GET /backup{glue}{spelled}.zip HTTP/1.1\r\nHost: s\r\n\r\n").into_bytes(),
        1 => format!("GET /q?ip={glue}{spelled}&x=1 HTTP/1.1\r\nHost: s\r\n\r\n").into_bytes(),
        2 => format!(
            "GET /q?u={} HTTP/1.1\r\nHost: s\r\n\r\n",
            percent_encode(spelled)
        )
        .into_bytes(),
        3 => format!(
            "GET /q?u={} HTTP/1.1\r\nHost: s\r\n\r\n",
            percent_encode(&percent_encode(spelled))
        )
        .into_bytes(),
        4 => format!(
            "GET / HTTP/1.1\r\nHost: s\r\nVia: 1.1 proxy{spelled}\r\nX-Note: a\t{spelled}\r\n\
             Referer: http://[{spelled}]:8080/{glue}\r\n\r\n"
        )
        .into_bytes(),
        5 => {
            let body = format!("ip={glue}{spelled}&next={spelled}");
            format!(
                "POST /form HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        6 => {
            // The address straddles the body preview boundary (64 bytes).
            let pad = 64 - 3;
            let body = format!("{}{spelled}tail", "a".repeat(pad));
            format!(
                "POST /cut HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        7 => [
            b"\x02".as_slice(),
            spelled.as_bytes(),
            b"\r\n",
            spelled.as_bytes(),
            b"\t",
        ]
        .concat(),
        _ => {
            // Garbage whose preview (512 bytes) ends inside the address.
            let mut bytes = vec![0x16u8];
            bytes.extend(std::iter::repeat_n(b'#', 512 - 1 - 4));
            bytes.extend_from_slice(spelled.as_bytes());
            bytes.extend_from_slice(&[b'!'; 40]);
            bytes
        }
    }
}

fn export(db: &Path, key: &Path, format: &str, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(["export", "--anonymize", "--key-file"])
        .arg(key)
        .arg("--db")
        .arg(db)
        .args(["--format", format, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Everything an export holds, in every form a reader could decode it to: the cells, BLOBs
/// decoded from hex, previews unescaped, text percent-decoded and JSON decoded.
fn readable_forms(cells: Vec<String>) -> String {
    let mut all = String::new();
    for cell in cells {
        all.push_str(&cell);
        all.push('\n');
        if cell.len() % 2 == 0 && cell.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = (0..cell.len() / 2)
                .map(|i| u8::from_str_radix(&cell[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            all.push_str(&String::from_utf8_lossy(&bytes));
            all.push('\n');
        }
        let (unescaped, _) = tarpit::address_text::unescape_preview(&cell);
        all.push_str(&String::from_utf8_lossy(&unescaped));
        all.push('\n');
        let mut decoded = cell.clone();
        for _ in 0..3 {
            decoded = percent_encoding::percent_decode_str(&decoded)
                .decode_utf8_lossy()
                .into_owned();
            all.push_str(&decoded);
            all.push('\n');
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&cell) {
            for (k, v) in map {
                all.push_str(&format!("{k}\n{}\n", v.as_str().unwrap_or_default()));
            }
        }
    }
    all
}

fn cells_csv(path: &Path) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .flat_map(|r| r.unwrap().iter().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn cells_jsonl(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .flat_map(|line| {
            let row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            row.into_values()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cells_parquet(path: &Path) -> Vec<String> {
    use rusqlite::types::Value;
    common::dataset::read_parquet(path)
        .into_iter()
        .flat_map(|row| row.into_values())
        .filter_map(|value| match value {
            Value::Text(text) => Some(text),
            Value::Blob(bytes) => Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn no_address_survives_an_anonymised_export_in_any_format() {
    let tarpit = Tarpit::start(&[
        "--response-delay",
        "0.05",
        "--max-response-bytes",
        "2",
        "--body-preview-bytes",
        "64",
    ]);
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut addresses = Vec::new();
    let mut sent = 0;
    for case in 0..240u64 {
        let address = if case.is_multiple_of(2) {
            IpAddr::V4(rng.v4())
        } else {
            IpAddr::V6(rng.v6())
        };
        let spelled = rng.pick(&spellings(address)).clone();
        let bytes = request(case / 2, &spelled, &mut rng);
        let mut stream = tarpit.connect();
        stream.write_all(&bytes).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        addresses.push((address, spelled));
        sent += 1;
    }
    let recorded = tarpit.wait_count("SELECT COUNT(*) FROM events", sent);
    assert_eq!(recorded, sent);
    // Let every row complete before exporting.
    std::thread::sleep(Duration::from_millis(500));

    let db = tarpit.dir.join("data/tarpit_events.db");
    let key = tarpit.dir.join("export.key");
    std::fs::write(
        &key,
        (0u8..32).map(|b| b.wrapping_mul(37)).collect::<Vec<_>>(),
    )
    .unwrap();
    let body_hashes: Vec<String> = {
        let conn = tarpit.db();
        let mut stmt = conn
            .prepare("SELECT body_sha256 FROM events WHERE body_sha256 IS NOT NULL")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(
        body_hashes.len() >= 20,
        "bodies were sent: {}",
        body_hashes.len()
    );

    for format in ["csv", "jsonl", "parquet"] {
        let out = tarpit.dir.join(format!("anon.{format}"));
        export(&db, &key, format, &out);
        let cells = match format {
            "csv" => cells_csv(&out),
            "jsonl" => cells_jsonl(&out),
            _ => cells_parquet(&out),
        };
        let haystack = readable_forms(cells).to_lowercase();
        for (address, spelled) in &addresses {
            for form in giveaways(*address).iter().chain([spelled]) {
                assert!(
                    !haystack.contains(&form.to_lowercase()),
                    "{format}: {form} (address {address}, sent as {spelled}) survived"
                );
            }
        }
        for hash in &body_hashes {
            assert!(
                !haystack.contains(hash),
                "{format}: the unkeyed body hash {hash} survived"
            );
        }
    }
}
