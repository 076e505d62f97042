"""A current ClickHouse behind the HTTP interface, for the tests.

Debian 12 packages ClickHouse 18.16; the DDL, the inserts and the example queries must also work
on current releases. chDB (PyPI `chdb-core`, Apache-2.0) embeds a current ClickHouse engine in
Python; this serves it the way ClickHouse's HTTP interface does for what the tarpit and the tests
use: the query in `?query=` with the data in the body (INSERT ... FORMAT JSONEachRow), or the
query as the body; HTTP basic authentication; errors as HTTP 500 (401 for a wrong password) with
ClickHouse's message.

    python3 xtask/clickhouse/current.py --port PORT --dir DIR --password PASSWORD
"""

import argparse
import base64
import http.server
import urllib.parse

from chdb import session


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    db = session.Session(args.dir)
    users = {"default": "", "tarpit": args.password}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8")
            user, password = "default", ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if users.get(user) != password:
                return self.answer(401, f"Code: 516. DB::Exception: {user}: Authentication failed")
            params = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            query = params.get("query", [""])[0]
            sql = f"{query}\n{body}" if query else body
            fmt = "TabSeparated"
            try:
                result = db.query(sql, fmt)
            except Exception as error:  # chDB raises its ClickHouse error text
                return self.answer(500, str(error))
            self.answer(200, result.bytes().decode("utf-8") if result is not None else "")

        def do_GET(self):
            self.answer(200, "Ok.\n")

        def answer(self, status, text):
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/tab-separated-values; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
