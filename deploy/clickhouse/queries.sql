-- Example queries over the fleet's table (deploy/clickhouse/requests.sql). Each ends with `;`
-- and runs on ClickHouse 18.16 and current releases (the tests run every one of them).
-- FINAL reads each request's latest version; drop it on very large tables when an estimate
-- is enough (a request shipped while open and again when it ended then counts twice until
-- ClickHouse merges the parts).

-- Requests and distinct clients per sensor, with the sensor's region label.
SELECT sensor_id,
       any(sensor_label_values[indexOf(sensor_label_names, 'region')]) AS region,
       count() AS requests,
       uniqExact(client_ip) AS clients
FROM tarpit.requests FINAL
GROUP BY sensor_id
ORDER BY requests DESC;

-- The paths scanned across the fleet, with how many sensors saw each.
SELECT http_path, count() AS requests, uniqExact(sensor_id) AS sensors
FROM tarpit.requests FINAL
WHERE http_path IS NOT NULL
GROUP BY http_path
ORDER BY requests DESC
LIMIT 20;

-- Attacker-seconds by sensor and tool: how long each tool's requests were held, counted to
-- the client's FIN where it gave up (`client_fin_s`), else to the end of the response.
SELECT sensor_id,
       arrayJoin(if(empty(arrayFilter(t -> substring(t, 1, 5) = 'tool:', tags)), ['tool:unknown'],
                    arrayFilter(t -> substring(t, 1, 5) = 'tool:', tags))) AS tool,
       count() AS requests,
       round(sum(ifNull(client_fin_s, ifNull(duration_s, 0))), 1) AS attacker_seconds
FROM tarpit.requests FINAL
GROUP BY sensor_id, tool
ORDER BY attacker_seconds DESC;

-- Clients seen by more than one sensor: the fleet's view of who scans widely.
SELECT client_ip, uniqExact(sensor_id) AS sensors, count() AS requests,
       min(timestamp) AS first_seen, max(timestamp) AS last_seen
FROM tarpit.requests FINAL
GROUP BY client_ip
HAVING sensors > 1
ORDER BY sensors DESC, requests DESC
LIMIT 20;

-- Requests per hour and sensor over the last day (for a dashboard).
SELECT toStartOfHour(timestamp) AS hour, sensor_id, count() AS requests
FROM tarpit.requests FINAL
WHERE timestamp >= now() - 86400
GROUP BY hour, sensor_id
ORDER BY hour, sensor_id;

-- The most common JA4 and SYN fingerprints per tool tag.
SELECT arrayJoin(arrayFilter(t -> substring(t, 1, 5) = 'tool:', tags)) AS tool,
       ifNull(ja4, '') AS ja4, ifNull(syn_fp, '') AS syn_fp, count() AS requests
FROM tarpit.requests FINAL
GROUP BY tool, ja4, syn_fp
ORDER BY requests DESC
LIMIT 20;

-- How late each sensor's data is: the newest request ClickHouse has from it.
SELECT sensor_id, max(timestamp) AS newest, now() - max(timestamp) AS seconds_behind
FROM tarpit.requests
GROUP BY sensor_id
ORDER BY seconds_behind DESC;

-- What the fleet learned in the adaptive mode: per tool, how many sensors have a give-up figure
-- and their median (the figure a sensor without its own plans with).
SELECT name, count() AS sensors, median(g) AS fleet_give_up_s
FROM (
    SELECT name, sensor_id, argMax(give_up_s, updated_at) AS g
    FROM tarpit.giveup_figures
    WHERE kind = 'tool'
    GROUP BY name, sensor_id
)
GROUP BY name
ORDER BY sensors DESC;
