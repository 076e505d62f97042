#!/usr/bin/env python3
"""Generates a large events database for timing `tarpit stats`, `report` and `export`.

Usage: python3 xtask/bench/gen_events.py OUT.db [ROWS]   (default 10,000,000 rows)

OUT.db must already have the tarpit's schema, which the tarpit creates when it starts: run
`tarpit --database OUT.db --port 0` once and stop it (Ctrl-C). Rows: 50,000 client addresses,
110 target ports, 5,003 paths, 500 User-Agents, 10 countries, 400 ASNs, 30 days; the same
every time (seeded).
"""
import random
import sqlite3
import sys

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
rng = random.Random(7)
clients = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
           for _ in range(50_000)]
ports = [80, 443, 8080, 8443, 8888, 23, 22, 21, 25, 3389] + list(range(9000, 9100))
paths = ["/", "/.env", "/wp-login.php"] + [f"/path/{i}" for i in range(5_000)]
agents = [f"scanner/{i}" for i in range(500)]
countries = ["US", "CN", "DE", "NL", "RU", "BR", "IN", "FR", "GB", "SG"]
start = 1_761_955_200  # 2025-11-01T00:00:00Z

db = sqlite3.connect(out)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=OFF")
next_id = (db.execute("SELECT IFNULL(MAX(conn_id), 0) FROM events").fetchone()[0] or 0) + 1


def batch(n, base):
    import time
    for i in range(n):
        t = start + (base + i) * (30 * 86_400) // rows
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"
        c = rng.randrange(len(clients))
        yield (ts, clients[c], rng.randrange(1024, 65535), rng.choice(ports), "GET",
               rng.choice(paths), rng.choice(agents), rng.randrange(0, 1201),
               rng.random() * 1800, countries[c % len(countries)], 1000 + c % 400,
               f"Net {c % 400}", next_id + base + i, 1, "complete")


done = 0
while done < rows:
    n = min(200_000, rows - done)
    db.executemany(
        "INSERT INTO events (timestamp, client_ip, client_port, target_port, http_method,"
        " http_path, user_agent, bytes_sent, duration_s, country_iso_code, asn_number,"
        " asn_organization, conn_id, request_seq, end_reason)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch(n, done))
    db.commit()
    done += n
print(f"{done} rows in {out}")
