-- The table every sensor ships its requests to (see docs/fleet.md).
--
-- Apply once, as a user allowed to create tables:
--   clickhouse-client --multiquery < deploy/clickhouse/requests.sql
-- Works on Debian 12's ClickHouse 18.16 and on current releases: only types and syntax both
-- understand (no LowCardinality, Map, DateTime64 or JSON types).
--
-- One row per request, keyed by (sensor_id, conn_id, request_seq). A sensor ships a request when
-- it ends (or as it stands after [ship.clickhouse] open_after, then again when it ends), and
-- resends after a crash what ClickHouse may already have: ReplacingMergeTree keeps the highest
-- `version` of each key when parts merge, so read with FINAL (or argMax by version) for exact
-- counts. Column meanings are those of the sensor's SQLite `events` table (README, "The forensic
-- record"); `body_preview_hex` is the preview hex encoded (`unhex()` gives the bytes), the
-- times are UTC seconds, `tags` the classification's tags and `sensor_label_names` /
-- `sensor_label_values` the sensor's [sensor] labels (value of a label:
-- `sensor_label_values[indexOf(sensor_label_names, 'region')]`).

CREATE DATABASE IF NOT EXISTS tarpit;

CREATE TABLE IF NOT EXISTS tarpit.requests (
    sensor_id String,
    conn_id UInt64,
    request_seq UInt64,
    version UInt64,
    event_id UInt64,
    timestamp DateTime('UTC'),
    timestamp_ms Int64,
    tags Array(String),
    sensor_label_names Array(String),
    sensor_label_values Array(String),
    client_ip Nullable(String),
    client_port Nullable(Int64),
    target_port Nullable(Int64),
    http_method Nullable(String),
    http_path Nullable(String),
    http_query Nullable(String),
    user_agent Nullable(String),
    headers_json Nullable(String),
    response_status Nullable(Int64),
    bytes_sent Nullable(Int64),
    duration_s Nullable(Float64),
    error_message Nullable(String),
    country_iso_code Nullable(String),
    country_name Nullable(String),
    city_name Nullable(String),
    latitude Nullable(Float64),
    longitude Nullable(Float64),
    asn_number Nullable(Int64),
    asn_organization Nullable(String),
    reported_to_abuseipdb UInt8,
    abuseipdb_report_timestamp Nullable(DateTime('UTC')),
    http_version Nullable(String),
    client_ip_source Nullable(String),
    peer_ip Nullable(String),
    peer_port Nullable(Int64),
    local_ip Nullable(String),
    local_port Nullable(Int64),
    target_port_source Nullable(String),
    target_port_ebpf Nullable(Int64),
    target_port_original_dst Nullable(Int64),
    target_port_header Nullable(Int64),
    ebpf_lookup Nullable(String),
    head_size Nullable(Int64),
    raw_preview Nullable(String),
    body_preview_hex Nullable(String),
    body_sha256 Nullable(String),
    body_length Nullable(Int64),
    end_reason Nullable(String),
    closed_at Nullable(DateTime('UTC')),
    syn_ttl Nullable(Int64),
    syn_initial_ttl Nullable(Int64),
    syn_df Nullable(Int64),
    syn_window Nullable(Int64),
    syn_mss Nullable(Int64),
    syn_wscale Nullable(Int64),
    syn_options Nullable(String),
    syn_fp Nullable(String),
    tls_version Nullable(String),
    tls_sni Nullable(String),
    tls_alpn Nullable(String),
    ja4 Nullable(String),
    header_order Nullable(String),
    header_order_hash Nullable(String),
    response_mode Nullable(String),
    giveup_limit_s Nullable(Float64),
    giveup_basis Nullable(String),
    planned_end_s Nullable(Float64),
    client_fin_s Nullable(Float64),
    crs_score Nullable(Int64),
    actor_id Nullable(Int64)
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (sensor_id, conn_id, request_seq);


-- The adaptive mode's give-up figures, exchanged between sensors ([adaptive] fleet_interval,
-- `[ship.clickhouse] figures_table`): per sensor, tool and User-Agent family, the figure the
-- sensor plans with (the give-up time, seconds) and how many give-ups it has seen. Figures only:
-- no samples, no client addresses. A sensor reads the others' latest figure per family
-- (argMax by updated_at) from the last 7 days and plans with their median.
CREATE TABLE IF NOT EXISTS tarpit.giveup_figures (
    sensor_id String,
    kind String,
    name String,
    tool String,
    give_up_s Float64,
    give_ups UInt64,
    updated_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (kind, name, sensor_id);


-- Canary tokens (`crate::ship::canary`, `[ship.clickhouse] tokens_table`): who each sensor
-- issued which token to (the client address, the kind and its slot in the page, when, for which
-- path). Never the token itself: a sensor holding the fleet's TARPIT_CANARY_KEY recomputes it,
-- and recognises it from then on. Re-running this file on an existing store adds the tables.
CREATE TABLE IF NOT EXISTS tarpit.canary_tokens (
    sensor_id String,
    client_ip String,
    kind String,
    ordinal UInt8,
    first_issued DateTime('UTC'),
    first_path String,
    shipped_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(shipped_at)
ORDER BY (sensor_id, client_ip, kind, ordinal);


-- Every sensor's canary token sightings (`[ship.clickhouse] sightings_table`): a token issued to
-- `issued_to` by sensor `issued_by` was sent by `client_ip` to sensor `sensor_id`. `merged` is 1
-- when the sensor joined the two addresses' actors. `tarpit actors --fleet` rebuilds the
-- fleet's actors from these rows (see docs/fleet.md for the query).
CREATE TABLE IF NOT EXISTS tarpit.token_sightings (
    sensor_id String,
    sighting_id UInt64,
    timestamp DateTime('UTC'),
    client_ip String,
    kind String,
    ordinal UInt8,
    location String,
    issued_to String,
    issued_by String,
    first_issued DateTime('UTC'),
    merged UInt8,
    shipped_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(shipped_at)
ORDER BY (sensor_id, sighting_id);
