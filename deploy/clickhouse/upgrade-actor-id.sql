-- Adds each request's actor (the sensor's `events.actor_id`, see README "Who is behind the
-- addresses") to a `tarpit.requests` table created before it existed (requests.sql creates it
-- with the column). A sensor refuses to ship to a table that lacks a column, naming this file.
-- Apply once:
--   clickhouse-client --multiquery < deploy/clickhouse/upgrade-actor-id.sql
-- (ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: on a table that has the column, this fails
-- with "column already exists", which is harmless.) Running requests.sql again also adds the
-- canary token tables.

ALTER TABLE tarpit.requests ADD COLUMN actor_id Nullable(Int64);
