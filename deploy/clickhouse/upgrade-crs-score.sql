-- Adds the OWASP CRS anomaly score to a `tarpit.requests` table created before it existed
-- (requests.sql creates it with the column). A sensor refuses to ship to a table that lacks a
-- column, naming this file. Apply once:
--   clickhouse-client --multiquery < deploy/clickhouse/upgrade-crs-score.sql
-- (ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: on a table that has the column, this fails
-- with "column already exists", which is harmless.)

ALTER TABLE tarpit.requests ADD COLUMN crs_score Nullable(Int64);
