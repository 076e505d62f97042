//! GeoIP/ASN enrichment from MaxMind GeoLite2 files, on the pipeline (never on a worker).
//!
//! Both databases are memory-mapped and looked up through a small LRU cache (scanners repeat).
//! A missing or corrupt file turns its half of the enrichment off with one clear line naming the
//! file and the reason; the files are re-checked every `reload_interval`, so a weekly update
//! (geoipupdate replaces files atomically) or a file that appears later is picked up without a
//! restart. Replace files by renaming, never by overwriting in place: a memory-mapped file must
//! not change under the reader.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use maxminddb::{Mmap, Reader, geoip2};

pub use crate::event::GeoInfo;
use crate::event::RequestRecord;
use crate::net_class::is_global;

/// Which of the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    City,
    Asn,
}

/// Identity of a file on disk: a rename or rewrite changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// One database file and its state.
struct Database {
    kind: Kind,
    path: PathBuf,
    reader: Option<Reader<Mmap>>,
    /// The file as last examined (`None`: missing).
    seen: Option<FileStamp>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("loaded", &self.reader.is_some())
            .finish()
    }
}

/// Opens and checks a database: the metadata must parse and a probe lookup must decode, so a
/// corrupt tree is caught here rather than on every lookup.
fn open(kind: Kind, path: &Path) -> Result<Reader<Mmap>, String> {
    // SAFETY: the file is only ever replaced by rename (documented), never modified in place,
    // so the mapping stays valid for the reader's life.
    let reader = unsafe { Reader::open_mmap(path) }.map_err(|e| e.to_string())?;
    let expected = match kind {
        Kind::City => "City",
        Kind::Asn => "ASN",
    };
    if !reader.metadata().database_type.contains(expected) {
        return Err(format!(
            "it is a {} database, not a {expected} one",
            reader.metadata().database_type
        ));
    }
    let probe = reader
        .lookup(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)))
        .map_err(|e| e.to_string())?;
    let decoded = match kind {
        Kind::City => probe.decode::<geoip2::City>().map(|_| ()),
        Kind::Asn => probe.decode::<geoip2::Asn>().map(|_| ()),
    };
    decoded.map_err(|e| e.to_string())?;
    Ok(reader)
}

impl Database {
    fn new(kind: Kind, path: &Path) -> Self {
        let mut db = Database {
            kind,
            path: path.to_path_buf(),
            reader: None,
            seen: None,
        };
        db.refresh(true);
        db
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::City => "city_db",
            Kind::Asn => "asn_db",
        }
    }

    /// Re-opens the file when it changed since last time; returns true when the data changed.
    fn refresh(&mut self, first: bool) -> bool {
        let now = stamp(&self.path);
        if !first && now == self.seen {
            return false;
        }
        self.seen = now;
        let name = self.path.display();
        if now.is_none() {
            if first {
                tracing::warn!(
                    "GeoIP {}: {name} not found; put MaxMind's GeoLite2 {} file there \
                     (geoipupdate does) to fill the location columns; it is picked up without \
                     a restart",
                    self.label(),
                    if self.kind == Kind::City {
                        "City"
                    } else {
                        "ASN"
                    }
                );
            } else if self.reader.take().is_some() {
                tracing::warn!("GeoIP {}: {name} was removed; lookups off", self.label());
                return true;
            }
            return false;
        }
        match open(self.kind, &self.path) {
            Ok(reader) => {
                let build = reader.metadata().build_epoch;
                let verb = if self.reader.is_some() {
                    "reloaded"
                } else {
                    "loaded"
                };
                tracing::info!(
                    "GeoIP {}: {verb} {name} ({}, built at unix time {build})",
                    self.label(),
                    reader.metadata().database_type
                );
                self.reader = Some(reader);
                true
            }
            Err(error) if self.reader.is_some() => {
                tracing::error!(
                    "GeoIP {}: cannot load the new {name}: {error}; keeping the previous data",
                    self.label()
                );
                false
            }
            Err(error) => {
                tracing::error!(
                    "GeoIP {}: cannot load {name}: {error}; lookups off until the file is replaced",
                    self.label()
                );
                false
            }
        }
    }
}

/// The enricher: both databases, the cache and the reload clock.
#[derive(Debug)]
pub struct GeoIp {
    city: Database,
    asn: Database,
    cache: LruCache<IpAddr, Arc<GeoInfo>>,
    reload_interval: Duration,
    next_check: Instant,
}

impl GeoIp {
    /// Opens whatever of the two files is usable, logging once for each that is not.
    pub fn open(city_db: &Path, asn_db: &Path, reload_interval: Duration, cache: usize) -> Self {
        Self {
            city: Database::new(Kind::City, city_db),
            asn: Database::new(Kind::Asn, asn_db),
            cache: LruCache::new(NonZeroUsize::new(cache.max(1)).expect("at least 1")),
            reload_interval,
            next_check: Instant::now() + reload_interval,
        }
    }

    /// Looks an address up; `None` for addresses that are not global or when nothing is known.
    pub fn lookup(&mut self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        let now = Instant::now();
        if now >= self.next_check {
            self.next_check = now + self.reload_interval;
            let city_changed = self.city.refresh(false);
            let asn_changed = self.asn.refresh(false);
            if city_changed || asn_changed {
                self.cache.clear();
            }
        }
        let ip = ip.to_canonical();
        if !is_global(ip) || (self.city.reader.is_none() && self.asn.reader.is_none()) {
            return None;
        }
        if let Some(hit) = self.cache.get(&ip) {
            metrics::counter!("tarpit_geoip_lookups_total", "result" => "cached").increment(1);
            return Some(hit.clone());
        }
        let mut info = GeoInfo::default();
        if let Some(reader) = &self.city.reader
            && let Ok(Some(city)) = reader.lookup(ip).and_then(|r| r.decode::<geoip2::City>())
        {
            info.country_iso_code = city.country.iso_code.map(str::to_owned);
            info.country_name = city.country.names.english.map(str::to_owned);
            info.city_name = city.city.names.english.map(str::to_owned);
            info.latitude = city.location.latitude;
            info.longitude = city.location.longitude;
        }
        if let Some(reader) = &self.asn.reader
            && let Ok(Some(asn)) = reader.lookup(ip).and_then(|r| r.decode::<geoip2::Asn>())
        {
            info.asn_number = asn.autonomous_system_number;
            info.asn_organization = asn.autonomous_system_organization.map(str::to_owned);
        }
        let result = if info == GeoInfo::default() {
            "miss"
        } else {
            "hit"
        };
        metrics::counter!("tarpit_geoip_lookups_total", "result" => result).increment(1);
        let info = Arc::new(info);
        self.cache.put(ip, info.clone());
        Some(info)
    }

    /// Fills a request's location and ASN columns from its client address.
    pub fn enrich(&mut self, record: &mut RequestRecord) {
        if let Some(info) = self.lookup(record.client_ip) {
            record.geo = GeoInfo::clone(&info);
        }
    }
}

/// One line per database for `tarpit check-config`: whether it is usable and why not.
pub fn describe(city_db: &Path, asn_db: &Path) -> Vec<String> {
    [
        (Kind::City, city_db, "city_db"),
        (Kind::Asn, asn_db, "asn_db"),
    ]
    .into_iter()
    .map(|(kind, path, key)| {
        let state = if !path.exists() {
            "not found (lookups off until it appears)".to_owned()
        } else {
            match open(kind, path) {
                Ok(reader) => format!("ok ({})", reader.metadata().database_type),
                Err(e) => format!("unusable: {e}"),
            }
        };
        format!("geoip.{key} {}: {state}", path.display())
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official MaxMind test databases (`../shared/testdata/geoip`, beside the repository).
    fn shared_testdata() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/geoip");
        if dir.join("GeoLite2-City-Test.mmdb").is_file() {
            return Some(dir);
        }
        assert!(
            std::env::var_os("TARPIT_E2E").is_none(),
            "TARPIT_E2E is set but {} has no MaxMind test databases",
            dir.display()
        );
        eprintln!("SKIPPED: no ../shared/testdata/geoip (TARPIT_E2E=1 makes this a failure)");
        None
    }

    /// A City fixture: 81.2.69.0/24 in `city`, and 10.0.0.0/8 (which must never be asked).
    fn city_fixture(path: &Path, city: &str) {
        let record = |iso: &str, country: &str, city: &str, lat: f64| {
            serde_json::json!({
                "country": { "iso_code": iso, "names": { "en": country } },
                "city": { "names": { "en": city } },
                "location": { "latitude": lat, "longitude": -0.1 },
            })
        };
        let mut writer = mmdb_writer::Writer::new("GeoLite2-City");
        let net: ipnet::IpNet = "81.2.69.0/24".parse().unwrap();
        writer
            .insert(net, &record("GB", "United Kingdom", city, 51.5))
            .unwrap();
        let private: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        writer
            .insert(private, &record("XX", "Nowhere", "Private", 0.0))
            .unwrap();
        write_atomically(path, &writer.to_bytes().unwrap());
    }

    fn asn_fixture(path: &Path) {
        let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
        let net: ipnet::IpNet = "81.2.69.0/24".parse().unwrap();
        // Typed, so the number is stored as uint32 like in GeoLite2-ASN (JSON numbers are u64).
        #[derive(serde::Serialize)]
        struct Asn {
            autonomous_system_number: u32,
            autonomous_system_organization: &'static str,
        }
        let record = Asn {
            autonomous_system_number: 20712,
            autonomous_system_organization: "Andrews & Arnold Ltd",
        };
        writer.insert(net, &record).unwrap();
        write_atomically(path, &writer.to_bytes().unwrap());
    }

    /// As geoipupdate does: write a new file, then rename it over the old one.
    fn write_atomically(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn official_test_databases_give_the_known_answers() {
        let Some(dir) = shared_testdata() else { return };
        let mut geo = GeoIp::open(
            &dir.join("GeoLite2-City-Test.mmdb"),
            &dir.join("GeoLite2-ASN-Test.mmdb"),
            Duration::from_secs(60),
            16,
        );
        let london = geo.lookup(ip("81.2.69.142")).unwrap();
        assert_eq!(london.country_iso_code.as_deref(), Some("GB"));
        assert_eq!(london.city_name.as_deref(), Some("London"));
        assert_eq!(
            (london.latitude, london.longitude),
            (Some(51.5142), Some(-0.0931))
        );
        let linkoping = geo.lookup(ip("89.160.20.112")).unwrap();
        assert_eq!(linkoping.country_iso_code.as_deref(), Some("SE"));
        assert_eq!(linkoping.city_name.as_deref(), Some("Linköping"));
        let milton = geo.lookup(ip("216.160.83.56")).unwrap();
        assert_eq!(milton.city_name.as_deref(), Some("Milton"));
        assert_eq!(milton.country_name.as_deref(), Some("United States"));
        let telstra = geo.lookup(ip("1.128.0.1")).unwrap();
        assert_eq!(telstra.asn_number, Some(1221));
        assert_eq!(telstra.asn_organization.as_deref(), Some("Telstra Pty Ltd"));
        let google = geo.lookup(ip("1.0.0.1")).unwrap();
        assert_eq!(google.asn_number, Some(15169));
        // IPv4-mapped IPv6 is the same client.
        let mapped = geo.lookup(ip("::ffff:81.2.69.142")).unwrap();
        assert_eq!(mapped.city_name.as_deref(), Some("London"));
    }

    #[test]
    fn corrupt_official_file_is_turned_off_not_a_crash() {
        let Some(dir) = shared_testdata() else { return };
        let corrupt = dir.join("GeoIP2-City-Test-Invalid-Node-Count.mmdb");
        let mut geo = GeoIp::open(&corrupt, Path::new("/nonexistent.mmdb"), Duration::ZERO, 16);
        assert!(geo.city.reader.is_none());
        assert_eq!(geo.lookup(ip("81.2.69.142")), None);
        let lines = describe(&corrupt, Path::new("/nonexistent.mmdb"));
        assert!(lines[0].contains("unusable"), "{lines:?}");
        assert!(lines[1].contains("not found"), "{lines:?}");
    }

    #[test]
    fn fixtures_fill_every_column_and_private_addresses_are_never_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (city, asn) = (dir.path().join("c.mmdb"), dir.path().join("a.mmdb"));
        city_fixture(&city, "London");
        asn_fixture(&asn);
        let mut geo = GeoIp::open(&city, &asn, Duration::from_secs(60), 16);
        let info = geo.lookup(ip("81.2.69.7")).unwrap();
        assert_eq!(
            *info,
            GeoInfo {
                country_iso_code: Some("GB".into()),
                country_name: Some("United Kingdom".into()),
                city_name: Some("London".into()),
                latitude: Some(51.5),
                longitude: Some(-0.1),
                asn_number: Some(20712),
                asn_organization: Some("Andrews & Arnold Ltd".into()),
            }
        );
        assert_eq!(geo.lookup(ip("10.1.2.3")), None);
        assert_eq!(geo.lookup(ip("127.0.0.1")), None);
        // An address the files do not know gives an empty answer, not an error.
        assert_eq!(*geo.lookup(ip("8.8.8.8")).unwrap(), GeoInfo::default());
    }

    #[test]
    fn missing_garbage_and_wrong_type_files_turn_lookups_off() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, b"not a maxmind database at all").unwrap();
        let asn = dir.path().join("a.mmdb");
        asn_fixture(&asn);
        // The ASN file given as the city database is refused for its type.
        let mut geo = GeoIp::open(&asn, &garbage, Duration::from_secs(60), 16);
        assert!(geo.city.reader.is_none() && geo.asn.reader.is_none());
        assert_eq!(geo.lookup(ip("81.2.69.7")), None);
        let lines = describe(&asn, &garbage);
        assert!(lines[0].contains("not a City one"), "{lines:?}");
        assert!(lines[1].contains("unusable"), "{lines:?}");
    }

    #[test]
    fn a_replaced_or_new_file_is_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("GeoLite2-City.mmdb");
        let asn = dir.path().join("GeoLite2-ASN.mmdb");
        // Start with no files at all.
        let mut geo = GeoIp::open(&city, &asn, Duration::ZERO, 16);
        assert_eq!(geo.lookup(ip("81.2.69.7")), None);
        city_fixture(&city, "London");
        let first = geo.lookup(ip("81.2.69.7")).unwrap();
        assert_eq!(first.city_name.as_deref(), Some("London"));
        assert_eq!(first.asn_number, None);
        // A weekly update replaces the file atomically; the cache must not hide it.
        city_fixture(&city, "Londinium");
        asn_fixture(&asn);
        let second = geo.lookup(ip("81.2.69.7")).unwrap();
        assert_eq!(second.city_name.as_deref(), Some("Londinium"));
        assert_eq!(second.asn_number, Some(20712));
        // A corrupt replacement keeps the previous data.
        write_atomically(&city, b"truncated download");
        let third = geo.lookup(ip("81.2.69.7")).unwrap();
        assert_eq!(third.city_name.as_deref(), Some("Londinium"));
    }
}
