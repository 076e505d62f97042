#!/usr/bin/env python3
"""A faithful, minimal re-implementation of the Python/aiohttp tarpit this project replaces.

Kept only to be measured the same way as the Rust server:

    cargo xtask bench hold --conns 10000 \
        --compare-cmd "python3 xtask/bench/baseline.py --port {port}"

Like the original it is one aiohttp application: a catch-all handler records the request in
SQLite (synchronously, in the event loop) and in a JSON lines log, then drips "." with
asyncio.sleep until the byte limit, and records the end. Same defaults (1.5 s, ".", 1200
bytes), same response headers, aiohttp's default listen backlog (128).
"""
import argparse
import asyncio
import datetime
import json
import os
import sqlite3
import time

from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, client_ip TEXT, client_port INTEGER,
    target_port INTEGER, http_method TEXT, http_path TEXT, http_query TEXT, user_agent TEXT,
    headers_json TEXT, response_status INTEGER, bytes_sent INTEGER, duration_s REAL,
    error_message TEXT, country_iso_code TEXT, country_name TEXT, city_name TEXT,
    latitude REAL, longitude REAL, asn_number INTEGER, asn_organization TEXT,
    reported_to_abuseipdb INTEGER DEFAULT 0, abuseipdb_report_timestamp TEXT)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=1.5)
    parser.add_argument("--chunk", default=".")
    parser.add_argument("--max-bytes", type=int, default=1200)
    args = parser.parse_args()

    os.makedirs("data", exist_ok=True)
    os.makedirs("logs", exist_ok=True)
    db = sqlite3.connect("data/tarpit_events.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    db.commit()
    log = open("logs/tarpit.log", "a", buffering=1)
    chunk = args.chunk.encode()

    async def tarpit(request):
        started = time.monotonic()
        peer = request.transport.get_extra_info("peername") or ("", 0)
        target_port = int(request.headers.get("X-Tarpit-Target-Port", request.url.port or 0))
        cursor = db.execute(
            "INSERT INTO events (timestamp, client_ip, client_port, target_port, http_method,"
            " http_path, http_query, user_agent, headers_json, response_status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 200)",
            (
                datetime.datetime.utcnow().isoformat(),
                peer[0],
                peer[1],
                target_port,
                request.method,
                request.path,
                request.query_string,
                request.headers.get("User-Agent"),
                json.dumps(dict(request.headers)),
            ),
        )
        db.commit()
        row = cursor.lastrowid
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/plain", "Server": "nginx"}
        )
        response.enable_chunked_encoding()
        sent, error = 0, None
        try:
            await response.prepare(request)
            while sent < args.max_bytes:
                await response.write(chunk)
                sent += len(chunk)
                await asyncio.sleep(args.delay)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError) as e:
            error = type(e).__name__
        finally:
            duration = time.monotonic() - started
            db.execute(
                "UPDATE events SET bytes_sent = ?, duration_s = ?, error_message = ? WHERE id = ?",
                (sent, duration, error, row),
            )
            db.commit()
            log.write(json.dumps({"path": request.path, "client_ip": peer[0], "bytes_sent": sent,
                                  "duration_s": duration, "error": error}) + "\n")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", tarpit)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
