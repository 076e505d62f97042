//! The schema's history: every migration in order, each a batch of SQL run in one transaction
//! (see [`super::migrate`]).

/// Migrations, in order; migration `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the replaced tool's `events` columns first, then ours; and `connections`.
    concat!(
        r#"
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp TEXT NOT NULL,
        client_ip TEXT,
        client_port INTEGER,
        target_port INTEGER,
        http_method TEXT,
        http_path TEXT,
        http_query TEXT,
        user_agent TEXT,
        headers_json TEXT,
        response_status INTEGER,
        bytes_sent INTEGER,
        duration_s REAL,
        error_message TEXT,
        country_iso_code TEXT,
        country_name TEXT,
        city_name TEXT,
        latitude REAL,
        longitude REAL,
        asn_number INTEGER,
        asn_organization TEXT,
        reported_to_abuseipdb INTEGER NOT NULL DEFAULT 0,
        abuseipdb_report_timestamp TEXT,
        conn_id INTEGER NOT NULL,
        request_seq INTEGER NOT NULL,
        http_version TEXT,
        client_ip_source TEXT,
        peer_ip TEXT,
        peer_port INTEGER,
        local_ip TEXT,
        local_port INTEGER,
        target_port_source TEXT,
        target_port_ebpf INTEGER,
        target_port_original_dst INTEGER,
        target_port_header INTEGER,
        head_size INTEGER,
        raw_preview TEXT,
        body_preview BLOB,
        body_sha256 TEXT,
        body_length INTEGER,
        end_reason TEXT,
        closed_at TEXT,
        UNIQUE (conn_id, request_seq)
    );
    CREATE INDEX events_timestamp ON events (timestamp);
    CREATE INDEX events_client_ip ON events (client_ip);
"#,
        connections_ddl!()
    ),
    // 2: whether the eBPF hook saw a translation (`translated` / `untranslated` / NULL = off).
    "ALTER TABLE events ADD COLUMN ebpf_lookup TEXT;",
    // 3: AbuseIPDB reports, so the per-address interval and the daily budget survive restarts.
    r#"
    CREATE TABLE abuseipdb_reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ip TEXT NOT NULL,
        reported_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        http_status INTEGER,
        confidence_score INTEGER,
        error TEXT,
        categories TEXT,
        comment TEXT,
        conn_id INTEGER,
        request_seq INTEGER
    );
    CREATE INDEX abuseipdb_reports_time ON abuseipdb_reports (reported_at);
    "#,
    // 4: fingerprints (SYN, TLS ClientHello, header order) and classification tags. Tags are
    // keyed by the row id, so rows of the replaced tool's database (no conn_id) get them too.
    r#"
    ALTER TABLE events ADD COLUMN syn_ttl INTEGER;
    ALTER TABLE events ADD COLUMN syn_initial_ttl INTEGER;
    ALTER TABLE events ADD COLUMN syn_df INTEGER;
    ALTER TABLE events ADD COLUMN syn_window INTEGER;
    ALTER TABLE events ADD COLUMN syn_mss INTEGER;
    ALTER TABLE events ADD COLUMN syn_wscale INTEGER;
    ALTER TABLE events ADD COLUMN syn_options TEXT;
    ALTER TABLE events ADD COLUMN syn_fp TEXT;
    ALTER TABLE events ADD COLUMN tls_version TEXT;
    ALTER TABLE events ADD COLUMN tls_sni TEXT;
    ALTER TABLE events ADD COLUMN tls_alpn TEXT;
    ALTER TABLE events ADD COLUMN ja4 TEXT;
    ALTER TABLE events ADD COLUMN header_order TEXT;
    ALTER TABLE events ADD COLUMN header_order_hash TEXT;
    CREATE TABLE request_tags (
        event_id INTEGER NOT NULL REFERENCES events (id),
        conn_id INTEGER,
        request_seq INTEGER,
        tag TEXT NOT NULL,
        PRIMARY KEY (event_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX request_tags_tag ON request_tags (tag);
    "#,
    // 5: the adaptive mode: what each response was planned with, and the give-up model's
    // families (kept across restarts).
    r#"
    ALTER TABLE events ADD COLUMN response_mode TEXT;
    ALTER TABLE events ADD COLUMN giveup_limit_s REAL;
    ALTER TABLE events ADD COLUMN giveup_basis TEXT;
    ALTER TABLE events ADD COLUMN planned_end_s REAL;
    ALTER TABLE events ADD COLUMN client_fin_s REAL;
    CREATE TABLE giveup_families (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        give_up_s REAL,
        recent_s TEXT NOT NULL,
        give_ups INTEGER NOT NULL,
        planned_ends INTEGER NOT NULL,
        completed INTEGER NOT NULL,
        tool TEXT,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    "#,
    // 6: sensor identity: which sensor wrote each row (NULL on rows written before, and on the
    // replaced tool's), and each sensor's labels.
    r#"
    ALTER TABLE events ADD COLUMN sensor_id TEXT;
    ALTER TABLE connections ADD COLUMN sensor_id TEXT;
    ALTER TABLE abuseipdb_reports ADD COLUMN sensor_id TEXT;
    CREATE TABLE sensors (
        sensor_id TEXT PRIMARY KEY,
        labels_json TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: shipping (see `crate::ship`). `changed_seq` numbers each row's latest change (it only
    // grows; close to the change's time in microseconds) and is the version the central store
    // keeps; `change_seq` holds the last number given. Not indexed: the shipper follows `id`, and
    // `ship_watch` lists the rows it must look at again (shipped while open, or changed by a rare
    // writer). `ship_state` holds each target's cursor.
    r#"
    ALTER TABLE events ADD COLUMN changed_seq INTEGER;
    CREATE TABLE change_seq (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
    CREATE TABLE ship_state (
        target TEXT PRIMARY KEY,
        cursor_id INTEGER NOT NULL,
        shipped_rows INTEGER NOT NULL,
        last_shipped_at TEXT
    ) WITHOUT ROWID;
    CREATE TABLE ship_watch (event_id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
    "#,
    // 8: the OWASP CRS stage (see `crate::classify::crs`): each request's inbound anomaly score
    // (NULL until the stage has evaluated the row, and on rows it does not evaluate), and the
    // stage's cursor: rows up to `cursor_id` are evaluated. `active` says a tarpit with the CRS
    // on wrote here last, so shipping waits for the stage (see `crate::ship::outbox`).
    // `skipped_rows` counts rows the stage passed over to keep its backlog bounded
    // (`[classify] crs_backlog_max`; `tarpit classify` evaluates them later).
    // `crs_rules` holds the message of each rule of the set last loaded (for `stats`/`report`).
    r#"
    ALTER TABLE events ADD COLUMN crs_score INTEGER;
    CREATE TABLE classify_state (
        stage TEXT PRIMARY KEY,
        cursor_id INTEGER NOT NULL,
        active INTEGER NOT NULL,
        evaluated_rows INTEGER NOT NULL,
        skipped_rows INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE crs_rules (
        rule_id INTEGER PRIMARY KEY,
        message TEXT NOT NULL,
        paranoia INTEGER NOT NULL,
        version TEXT
    );
    "#,
    // 9: canary tokens and actors (see `crate::canary`, `crate::sink::sqlite::actors`). Every
    // request row gets the actor of its client (`actor_id`; rows written before have none);
    // `actor_clients` maps each client address to its actor, `actors` holds each actor
    // (`merged_into` once it joined another), `canary_tokens` the tokens issued (by sensor,
    // client and slot; the token itself is never stored: it is recomputed with the key),
    // `token_sightings` every issued token found in a request, and `actor_merges` each merge
    // with its evidence.
    r#"
    ALTER TABLE events ADD COLUMN actor_id INTEGER;
    CREATE TABLE actors (
        actor_id INTEGER PRIMARY KEY,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        clients INTEGER NOT NULL,
        merged_into INTEGER
    );
    CREATE TABLE actor_clients (
        client_ip TEXT PRIMARY KEY,
        actor_id INTEGER NOT NULL,
        first_seen TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX actor_clients_actor ON actor_clients (actor_id);
    CREATE TABLE canary_tokens (
        id INTEGER PRIMARY KEY,
        sensor_id TEXT NOT NULL,
        client_ip TEXT NOT NULL,
        kind TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        first_issued TEXT NOT NULL,
        last_issued TEXT NOT NULL,
        issues INTEGER NOT NULL,
        first_conn_id INTEGER,
        first_path TEXT,
        merges INTEGER NOT NULL DEFAULT 0,
        UNIQUE (sensor_id, client_ip, kind, ordinal)
    );
    CREATE INDEX canary_tokens_last_issued ON canary_tokens (last_issued);
    CREATE TABLE token_sightings (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        sensor_id TEXT,
        conn_id INTEGER NOT NULL,
        request_seq INTEGER NOT NULL,
        client_ip TEXT NOT NULL,
        kind TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        location TEXT NOT NULL,
        issued_to TEXT NOT NULL,
        issued_by TEXT NOT NULL,
        first_issued TEXT NOT NULL,
        issued_path TEXT,
        actor_id INTEGER,
        merged INTEGER NOT NULL
    );
    CREATE INDEX token_sightings_timestamp ON token_sightings (timestamp);
    CREATE TABLE actor_merges (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        actor_id INTEGER NOT NULL,
        merged_actor_id INTEGER NOT NULL,
        sighting_id INTEGER NOT NULL,
        evidence TEXT NOT NULL
    );
    CREATE INDEX actor_merges_actor ON actor_merges (actor_id);
    "#,
    // 10: addresses proven to be research scanners' by forward-confirmed reverse DNS (the
    // `scanner:<org>` tags; published ranges need no row, they are in the catalogue).
    r#"
    CREATE TABLE scanner_hosts (
        client_ip TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        via TEXT NOT NULL,
        host_name TEXT NOT NULL,
        first_verified TEXT NOT NULL,
        last_verified TEXT NOT NULL,
        sensor_id TEXT
    ) WITHOUT ROWID;
    "#,
    // 11: the live sharing outputs' cursors (DShield, TAXII, HPFeeds): the last `events.id`
    // each has dealt with, apart from shipping's `ship_state` (a re-tag rewinds shipping; a
    // submission to the community must never be repeated).
    r#"
    CREATE TABLE share_state (
        output TEXT PRIMARY KEY,
        cursor_id INTEGER NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0,
        last_success TEXT,
        last_error TEXT
    ) WITHOUT ROWID;
    "#,
];
