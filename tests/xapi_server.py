"""A loopback HTTP server that speaks the X API v2 wire format, for driving tweepy in the tests.

It serves the filtered-stream rules endpoints, the filtered stream itself (chunked, newline-delimited
JSON with blank keep-alive lines) following a script of connections, and paged recent search with
``since_id``/``next_token``. Any scripted connection can answer 429 with ``x-rate-limit-*`` headers,
drop mid-chunk, send an ``operational-disconnect`` error, or stall; search and the rules endpoints can
answer 429s first (with a reset header far off, malformed or missing), and search can page forever. Nothing about tweepy is patched:
tweepy is pointed at this server through ``twitter.api_base_url``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

OPERATIONAL_DISCONNECT = {
    "errors": [
        {
            "title": "operational-disconnect",
            "disconnect_type": "OperationalDisconnect",
            "detail": "This stream has been disconnected for operational reasons.",
            "type": "https://api.twitter.com/2/problems/operational-disconnect",
        }
    ]
}


def make_tweet(n: int, text: str | None = None) -> dict[str, Any]:
    """One v2 tweet object with the fields the producers ask for."""
    created = datetime(2026, 11, 26, 9, 0, tzinfo=UTC) + timedelta(seconds=n)
    return {
        "id": str(1_800_000_000_000_000_000 + n),
        "text": text or f"tweet {n}: the café was great 😍 #tweetpulse https://t.co/x{n}",
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "author_id": str(1000 + n % 7),
        "lang": "en",
        "edit_history_tweet_ids": [str(1_800_000_000_000_000_000 + n)],
    }


@dataclass
class Connection:
    """One scripted stream connection: ``status`` (429 answers with reset headers) or ``events``:
    ``("tweet", tweet, [tags])``, ``("keepalive",)``, ``("stall", seconds)``, ``("operational",)``
    then close, ``("drop",)`` mid-chunk, ``("end",)`` a clean end of the response."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    status: int = 200
    reset_in_s: int = 1


class XApiServer:
    def __init__(self, token: str, keepalive_every_s: float = 0.2) -> None:
        self.token = token
        self.keepalive_every_s = keepalive_every_s
        self.rules: dict[str, dict[str, str]] = {}
        self.script: list[Connection] = []
        self.search_tweets: list[dict[str, Any]] = []  # oldest first
        self.search_429s = 0  # answer this many search requests with 429 first
        self.rules_429s = 0  # and this many rules requests
        # what those 429s say in x-rate-limit-reset: seconds from now, a raw string, None: no headers
        self.rate_limit_reset: int | str | None = 1
        self.search_endless = False  # every search page carries a next_token, even past the last tweet
        self.stream_connections = 0
        self.search_requests: list[dict[str, list[str]]] = []
        self.unauthorized = 0
        self._next_rule_id = 1
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> XApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # rules ----------------------------------------------------------------------------------------

    def add_rules(self, rules: list[dict[str, str]]) -> dict[str, Any]:
        created, errors = [], []
        with self._lock:
            for rule in rules:
                dup = next((r for r in self.rules.values() if r["value"] == rule["value"]), None)
                if dup:
                    errors.append({"value": rule["value"], "id": dup["id"], "title": "DuplicateRule"})
                    continue
                rid = str(1_900_000_000_000_000_000 + self._next_rule_id)
                self._next_rule_id += 1
                self.rules[rid] = {
                    "id": rid,
                    "value": rule["value"],
                    **({"tag": rule["tag"]} if rule.get("tag") else {}),
                }
                created.append(self.rules[rid])
        body: dict[str, Any] = {
            "meta": {
                "sent": _now(),
                "summary": {
                    "created": len(created),
                    "not_created": len(errors),
                    "valid": len(created),
                    "invalid": 0,
                },
            }
        }
        if created:
            body["data"] = created
        if errors:
            body["errors"] = errors
        return body

    def delete_rules(self, ids: list[str]) -> dict[str, Any]:
        with self._lock:
            deleted = [i for i in ids if self.rules.pop(i, None)]
        return {
            "meta": {
                "sent": _now(),
                "summary": {"deleted": len(deleted), "not_deleted": len(ids) - len(deleted)},
            }
        }

    def rule_ids(self, tags: list[str]) -> list[dict[str, str]]:
        return [{"id": r["id"], "tag": r.get("tag", "")} for r in self.rules.values() if r.get("tag") in tags]

    # search ---------------------------------------------------------------------------------------

    def search_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        since = int(query.get("since_id", ["0"])[0])
        size = int(query.get("max_results", ["10"])[0])
        offset = int(query.get("next_token", ["0"])[0])
        newer = [t for t in reversed(self.search_tweets) if int(t["id"]) > since]  # newest first
        page = newer[offset : offset + size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta.update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
        if offset + size < len(newer) or self.search_endless:
            meta["next_token"] = str(offset + size)
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = page
            body["includes"] = {
                "users": [{"id": t["author_id"], "name": "U", "username": f"u{t['author_id']}"} for t in page]
            }
        return body


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-stream is the point of several scenarios


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _handler(server: XApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                server.unauthorized += 1
                return self._json(401, {"title": "Unauthorized", "status": 401, "detail": "Unauthorized"})
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/2/tweets/search/stream/rules" and server.rules_429s > 0:
                server.rules_429s -= 1
                return self._too_many(server.rate_limit_reset)
            if url.path == "/2/tweets/search/stream/rules" and method == "GET":
                data = list(server.rules.values())
                body: dict[str, Any] = {"meta": {"sent": _now(), "result_count": len(data)}}
                return self._json(200, {**({"data": data} if data else {}), **body})
            if url.path == "/2/tweets/search/stream/rules" and method == "POST":
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if "add" in payload:
                    return self._json(201, server.add_rules(payload["add"]))
                return self._json(200, server.delete_rules(payload.get("delete", {}).get("ids", [])))
            if url.path == "/2/tweets/search/stream":
                return self._stream()
            if url.path == "/2/tweets/search/recent":
                server.search_requests.append(query)
                if server.search_429s > 0:
                    server.search_429s -= 1
                    return self._too_many(server.rate_limit_reset)
                return self._json(200, server.search_page(query))
            return self._json(404, {"title": "Not Found Error", "status": 404})

        def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _too_many(self, reset_in_s: int | str | None) -> None:
            """A 429 whose reset is ``reset_in_s`` from now, that raw value, or (None) without headers."""
            reset = str(int(time.time()) + reset_in_s) if isinstance(reset_in_s, int) else reset_in_s
            headers = {"x-rate-limit-limit": "50", "x-rate-limit-remaining": "0", "x-rate-limit-reset": reset}
            self._json(
                429,
                {"title": "Too Many Requests", "status": 429, "detail": "Too Many Requests"},
                headers if reset is not None else {},
            )

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _stream(self) -> None:
            with server._lock:
                index = server.stream_connections
                server.stream_connections += 1
            conn = server.script[index] if index < len(server.script) else Connection()
            if conn.status == 429:
                return self._too_many(conn.reset_in_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                for event in conn.events:
                    if self._play(event):
                        return
                while not server._closing.is_set():  # then only keep-alives, until the client leaves
                    self._chunk(b"\r\n")
                    time.sleep(server.keepalive_every_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _play(self, event: tuple[Any, ...]) -> bool:
            """Send one scripted event; True when the connection is over."""
            kind = event[0]
            if kind == "tweet":
                tweet, tags = event[1], event[2]
                users = [{"id": tweet["author_id"], "name": "U", "username": f"u{tweet['author_id']}"}]
                message = {
                    "data": tweet,
                    "includes": {"users": users},
                    "matching_rules": server.rule_ids(tags),
                }
                self._chunk(json.dumps(message).encode() + b"\r\n")
            elif kind == "keepalive":
                self._chunk(b"\r\n")
            elif kind == "stall":
                time.sleep(event[1])
            elif kind == "operational":
                self._chunk(json.dumps(OPERATIONAL_DISCONNECT).encode() + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return True
            elif kind == "drop":
                self.wfile.write(b'40\r\n{"data": {"id": "1", "te')  # a chunk cut short
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return True
            elif kind == "end":
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return True
            return False

    return Handler
