"""`orch relay serve`: the tiny webhook relay.

    POST /hooks/plane, /hooks/gitea   verify the HMAC of the raw body, commit it to the
                                      inbox (durably), answer 202, then drain off the
                                      request path. Wrong or missing signature: 401,
                                      nothing stored. Over [relay] max_body_bytes: 413.
    GET  /healthz                     200 and the inbox counts
    GET  /queue                       what `orch queue --json` prints   (bearer token)
    POST /leases/release?task=KEY     as `orch lease release KEY`       (bearer token;
                                      &force=1 for a live owner)

The token routes are off (404) unless the variable named by [relay] token_env is set.
Secrets come from the environment only and are never logged or echoed.

Stdlib http.server on purpose: one small, threaded, dependency-free server whose only
job is to get bytes into SQLite fast; everything slow happens in the drain thread.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orch import log
from orch.app import open_runtime
from orch.config import Config
from orch.engine import inbox, leases, status
from orch.engine.runtime import Runtime
from orch.errors import OrchError
from orch.relay.signature import find_signature, verify_hmac_sha256

SOURCES = ("plane", "gitea")


class Relay:
    """The server, its request-side runtime (one connection behind a lock) and its drainer."""

    def __init__(self, cfg: Config, *, host: str | None = None, port: int | None = None, drain: bool = True):
        self.cfg = cfg
        self.rt = open_runtime(cfg, actor="relay")
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.drain_enabled = drain
        relay = self
        self.server = ThreadingHTTPServer(
            (host or cfg.relay_host, cfg.relay_port if port is None else port), _handler(relay)
        )
        self.server.daemon_threads = True
        self._drainer = threading.Thread(target=self._drain_loop, name="orch-drain", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def secret(self, source: str) -> bytes | None:
        var = self.cfg.plane_secret_env if source == "plane" else self.cfg.gitea_secret_env
        value = os.environ.get(var, "")
        return value.encode() if value else None

    def token(self) -> str | None:
        return os.environ.get(self.cfg.relay_token_env) or None

    def start(self) -> Relay:
        if self.drain_enabled:
            self._drainer.start()
        threading.Thread(target=self.server.serve_forever, name="orch-relay", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        if self.drain_enabled:
            self._drainer.start()
        try:
            self.server.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.server.shutdown()
        self.server.server_close()
        if self._drainer.is_alive():
            self._drainer.join(timeout=10)
        self.rt.close()

    def _drain_loop(self) -> None:
        rt: Runtime = open_runtime(self.cfg, actor="relay-drain")
        batch = 500
        try:
            # Drain at once (a backlog from before a restart), then on every wake; a full
            # batch means there is more: go on without waiting.
            while not self.stopping.is_set():
                try:
                    done = sum(inbox.drain(rt, limit=batch).values())
                except OrchError as e:  # the database was busy: the next wake tries again
                    log.warning("relay_drain_failed", error=str(e))
                    done = 0
                if done >= batch:
                    continue
                self.wake.wait(timeout=5.0)
                self.wake.clear()
        finally:
            rt.close()


def _handler(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "orch-relay"
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without TCP_NODELAY every 202 waits ~40 ms
        # for the sender's delayed ACK (bench/relay.py: p50 44 ms -> 5 ms).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return  # decisions are logged by orch.log; request lines would only repeat them

        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload, sort_keys=True, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            token = relay.token()
            if token is None:
                self._reply(404, {"error": "not found"})
                return False
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self._reply(401, {"error": "a valid bearer token is required"})
                return False
            return True

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/healthz":
                with relay.lock:
                    counts = relay.rt.store.inbox_count()
                self._reply(200, {"ok": True, "inbox": counts})
            elif path == "/queue":
                if self._authorized():
                    with relay.lock:
                        view = status.queue(relay.rt)
                    self._reply(200, view)
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/leases/release":
                self._release(parse_qs(parts.query))
                return
            source = parts.path.removeprefix("/hooks/")
            if not parts.path.startswith("/hooks/") or source not in SOURCES:
                self._reply(404, {"error": "not found"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._reply(411, {"error": "Content-Length is required"})
                self.close_connection = True
                return
            if int(length) > relay.cfg.relay_max_body:
                # Read (and drop) a moderately large body so the sender sees the 413 rather
                # than a reset; a huge one is cut off and the connection closed.
                if int(length) <= 8 * relay.cfg.relay_max_body:
                    remaining = int(length)
                    while remaining > 0:
                        remaining -= len(self.rfile.read(min(remaining, 65536)) or b"x" * remaining)
                else:
                    self.close_connection = True
                self._reply(413, {"error": f"body over {relay.cfg.relay_max_body} bytes"})
                return
            body = self.rfile.read(int(length))
            secret = relay.secret(source)
            if secret is None:
                self._reply(503, {"error": f"no webhook secret configured for {source}"})
                return
            if not verify_hmac_sha256(secret, body, find_signature(dict(self.headers.items()))):
                log.warning("relay_rejected", source=source, reason="bad or missing signature")
                self._reply(401, {"error": "bad or missing signature"})
                return
            try:
                with relay.lock:
                    item, new = inbox.put(relay.rt, source, body, dict(self.headers.items()))
            except OrchError as e:
                self._reply(503, {"error": f"could not store the delivery: {type(e).__name__}"})
                return
            self._reply(202, {"id": item, "duplicate": not new})
            log.info(
                "relay_accepted",
                source=source,
                id=item,
                duplicate=not new,
                kind=self.headers.get("X-Gitea-Event") or self.headers.get("X-Plane-Event"),
            )
            relay.wake.set()

        def _release(self, query: dict[str, list[str]]) -> None:
            if not self._authorized():
                return
            key = (query.get("task") or [""])[0]
            force = (query.get("force") or ["0"])[0] in ("1", "true", "yes")
            try:
                with relay.lock:
                    message = leases.release(relay.rt, key, force=force)
            except OrchError as e:
                self._reply(409 if e.exit_code == 4 else 400, {"error": str(e)})
                return
            self._reply(200, {"released": message})

    return Handler
