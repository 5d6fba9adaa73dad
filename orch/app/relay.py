"""`orch relay serve`: the tiny webhook relay.

    POST /hooks/plane, /hooks/gitea   verify the HMAC of the raw body with that source's
                                      secret, parse it as that source's event, commit it
                                      to the inbox (durably), answer 202, then drain off
                                      the request path. Wrong or missing signature: 401;
                                      not a delivery of that source (the other source's
                                      headers, not JSON, a string that cannot be stored):
                                      400; over [relay] max_body_bytes: 413; the database
                                      failing: 503. Nothing is stored on any of these.
    GET  /healthz                     200 and the inbox counts (503 if the database fails)
    GET  /queue                       what `orch queue --json` prints   (bearer token)
    POST /leases/release?task=KEY     as `orch lease release KEY`       (bearer token;
                                      &force=1 for a live owner)

The token routes are off (404) unless the variable named by [relay] token_env is set.
Secrets come from the environment only and are never logged or echoed. The relay refuses
to start when a configured integration's source has no secret (it would answer every
delivery with an error, and neither sender retries: they would all be lost).

Why asyncio from the standard library, and not http.server or a server library:
http.server gives each connection a thread for its whole life, so 200 clients that never
finish their headers held 200 threads, with no total deadline (a socket timeout restarts
on every byte). Here a connection is a coroutine until its request is complete: the
request line and headers must arrive within `header_timeout_s` *in total*, the body
within `body_timeout_s`, connections past `max_connections` get 503 at once, and only a
complete, size-checked request reaches the small thread pool that talks to SQLite. The
production servers that would do this for us (uvicorn, hypercorn, waitress) bring an
ASGI/WSGI layer and dependencies for five routes, and waitress's `channel_timeout` is an
idle timeout that a client sending one byte every few seconds never trips. The HTTP this
needs is small and is parsed strictly (one Content-Length of ASCII digits, no chunked
bodies, no folded headers); anything else is a 4xx and a closed connection, and a client
that hangs up is just a closed connection, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orch import log
from orch.app.wiring import open_runtime
from orch.config import Config
from orch.engine import inbox, jobs, leases, status
from orch.engine.runtime import Runtime
from orch.errors import ConfigError, OrchError
from orch.webhooks.payloads import MalformedPayload
from orch.webhooks.signature import find_signature, verify_hmac_sha256

SOURCES = ("plane", "gitea")
MAX_HEAD = 16 * 1024  # request line + headers
MAX_HEADERS = 100
WORKERS = 4  # threads that talk to SQLite; requests wait for one only once complete
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: `\xb2` passes str.isdigit(), not this
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def required_sources(cfg: Config) -> tuple[str, ...]:
    """The sources whose integration is configured: their webhooks are how orch hears of them."""
    out = []
    if cfg.tracker.kind == "plane":
        out.append("plane")
    if cfg.forge.kind == "gitea":
        out.append("gitea")
    return tuple(out)


def _secret_var(cfg: Config, source: str) -> str:
    return cfg.relay.plane_secret_env if source == "plane" else cfg.relay.gitea_secret_env


class _Reject(Exception):
    """A request that is answered with `code` and then the connection is closed."""

    def __init__(self, code: int, error: str):
        super().__init__(error)
        self.code = code
        self.error = error


class Relay:
    """The server, its request-side runtime (one connection behind a lock) and its drainer."""

    def __init__(self, cfg: Config, *, host: str | None = None, port: int | None = None, drain: bool = True):
        self.cfg = cfg
        self.secrets: dict[str, bytes] = {}
        for source in SOURCES:
            value = os.environ.get(_secret_var(cfg, source), "")
            if value:
                self.secrets[source] = value.encode()
        missing = [s for s in required_sources(cfg) if s not in self.secrets]
        if missing:
            raise ConfigError(
                "relay: "
                + "; ".join(f"{s} is configured but {_secret_var(cfg, s)} is not set" for s in missing)
                + ": set the webhook secret (the one entered in its webhook settings) before starting"
            )
        if not self.secrets:
            raise ConfigError(
                f"relay: no webhook secret is set: set {cfg.relay.gitea_secret_env} and/or "
                f"{cfg.relay.plane_secret_env} ([relay] gitea_secret_env, plane_secret_env)"
            )
        self.header_timeout = max(cfg.relay.header_timeout_s, 0.05)
        self.body_timeout = max(cfg.relay.body_timeout_s, 0.05)
        self.max_connections = cfg.relay.max_connections
        bind_host = host or cfg.relay.host
        bind_port = cfg.relay.port if port is None else port
        try:
            self.sock = socket.create_server((bind_host, bind_port), backlog=128, reuse_port=False)
        except (OSError, OverflowError, ValueError) as e:
            raise ConfigError(
                f"relay: cannot listen on {bind_host}:{bind_port} ([relay] host, port): {e}"
            ) from None
        self.sock.setblocking(False)
        host_, port_ = self.sock.getsockname()[:2]
        self.address: tuple[str, int] = (str(host_), int(port_))
        try:
            self.rt = open_runtime(cfg, actor="relay")  # it writes: the inbox may be the first state
        except BaseException:
            self.sock.close()
            raise
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.drain_enabled = drain
        self.active = 0  # open connections (touched on the event loop only)
        self._busy_logged = 0.0
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="orch-relay")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._serving: threading.Thread | None = None
        self._drainer = threading.Thread(target=self._drain_supervisor, name="orch-drain", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def token(self) -> str | None:
        return os.environ.get(self.cfg.relay.token_env) or None

    # -- running -------------------------------------------------------------------------

    def start(self) -> Relay:
        """Serve in a background thread (tests, benches); `close()` stops it."""
        if self.drain_enabled:
            self._drainer.start()
        self._serving = threading.Thread(target=self._run, name="orch-relay", daemon=True)
        self._serving.start()
        self._ready.wait(timeout=10)
        return self

    def serve_forever(self) -> None:
        if self.drain_enabled:
            self._drainer.start()
        try:
            self._run()
        finally:
            self.close()

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stop.set)
        if self._serving is not None and self._serving is not threading.current_thread():
            self._serving.join(timeout=10)
        if self._drainer.is_alive():
            self._drainer.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.sock.close()
        with self.lock:
            self.rt.close()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        conns: set[asyncio.StreamWriter] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.add(writer)
            try:
                await self._connection(reader, writer)
            finally:
                conns.discard(writer)

        server = await asyncio.start_server(on_connection, sock=self.sock, limit=MAX_HEAD)
        if threading.current_thread() is threading.main_thread():
            # `orch relay serve`: SIGTERM (systemd, docker stop) and Ctrl-C end it cleanly.
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stop.set)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for w in list(conns):
                w.close()

    # -- one connection ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        try:
            if self.active > self.max_connections:
                now = time.monotonic()
                if now - self._busy_logged >= 1.0:  # one line a second, however many are refused
                    self._busy_logged = now
                    log.warning("relay_busy", open_connections=self.active - 1, limit=self.max_connections)
                await self._send(writer, 503, {"error": "too many open connections; try again"}, close=True)
                return
            keep = True
            while keep and not self.stopping.is_set():
                keep = await self._one_request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client hung up or stopped sending: nothing to answer
        except Exception as e:  # never a traceback for one connection; the relay goes on
            log.error("relay_connection_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, answer one request; True to keep the connection for another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self.header_timeout)
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                await self._send(writer, 400, {"error": "incomplete request"}, close=True)
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, 431, {"error": f"request head over {MAX_HEAD} bytes"}, close=True)
            return False
        except TimeoutError:
            await self._send(writer, 408, {"error": "request head not received in time"}, close=True)
            return False
        try:
            method, target, version, headers = _parse_head(head)
            length = _content_length(headers, method)
        except _Reject as r:
            await self._send(writer, r.code, {"error": r.error}, close=True)
            return False
        if length > self.cfg.relay.max_body_bytes:
            # Read (and drop) a moderately large body so the sender sees the 413 rather
            # than a reset; a huge one is cut off.
            if length <= 8 * self.cfg.relay.max_body_bytes:
                await asyncio.wait_for(_discard(reader, length), timeout=self.body_timeout)
            await self._send(
                writer, 413, {"error": f"body over {self.cfg.relay.max_body_bytes} bytes"}, close=True
            )
            return False
        if length and headers.get("expect", "").lower() == "100-continue":  # curl, for bodies > 1 KiB
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await asyncio.wait_for(reader.readexactly(length), timeout=self.body_timeout)
        except TimeoutError:
            await self._send(writer, 408, {"error": "body not received in time"}, close=True)
            return False
        loop = asyncio.get_running_loop()
        code, payload = await loop.run_in_executor(self.pool, self.respond, method, target, headers, body)
        close = (
            version != "HTTP/1.1"
            or headers.get("connection", "").lower() == "close"
            or code >= 400
            or self.stopping.is_set()
        )
        await self._send(writer, code, payload, close=close)
        return not close

    async def _send(
        self, writer: asyncio.StreamWriter, code: int, payload: dict[str, Any], *, close: bool
    ) -> None:
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\nServer: orch-relay\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        writer.write(head.encode("ascii") + body)
        await asyncio.wait_for(writer.drain(), timeout=self.body_timeout)

    # -- the routes (in a worker thread, with a complete request) -----------------------

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        try:
            return self._route(method, target, headers, body)
        except Exception as e:  # one request's bug never takes the relay down
            log.error("relay_request_failed", error=f"{type(e).__name__}: {e}")
            return 500, {"error": "internal error; see the relay's log"}

    def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        path = parts.path
        if method == "GET" and path == "/healthz":
            try:
                with self.lock:
                    counts = self.rt.store.inbox_count()
            except OrchError as e:
                return 503, {"ok": False, "error": str(e)}
            return 200, {"ok": True, "inbox": counts}
        if method == "GET" and path == "/queue":
            denied = self._denied(headers)
            if denied:
                return denied
            try:
                with self.lock:
                    return 200, status.queue(self.rt)
            except OrchError as e:
                return 503, {"error": str(e)}
        if method == "POST" and path == "/leases/release":
            return self._release(headers, parse_qs(parts.query))
        if method == "POST" and path.startswith("/hooks/"):
            return self._hook(path.removeprefix("/hooks/"), headers, body)
        if path in ("/healthz", "/queue", "/leases/release") or path.startswith("/hooks/"):
            return 405, {"error": "method not allowed here"}
        return 404, {"error": "not found"}

    def _hook(self, source: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if source not in SOURCES:
            return 404, {"error": "not found"}
        secret = self.secrets.get(source)
        if secret is None:
            return 404, {"error": f"{source} webhooks are not enabled on this relay (no secret is set)"}
        if not verify_hmac_sha256(secret, body, find_signature(headers, source)):
            log.warning("relay_rejected", source=source, reason="bad or missing signature")
            return 401, {"error": "bad or missing signature"}
        try:
            with self.lock:
                item, new = inbox.put(self.rt, source, body, headers)
        except MalformedPayload as e:
            log.warning("relay_refused", source=source, reason=str(e))
            return 400, {"error": str(e)}
        except OrchError as e:
            log.error("relay_store_failed", source=source, error=str(e))
            return 503, {"error": f"could not store the delivery: {e}"}
        log.info("relay_accepted", source=source, id=item, duplicate=not new)
        self.wake.set()
        return 202, {"id": item, "duplicate": not new}

    def _denied(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        token = self.token()
        if token is None:
            return 404, {"error": "not found"}
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(errors="replace"), f"Bearer {token}".encode()):
            return 401, {"error": "a valid bearer token is required"}
        return None

    def _release(self, headers: dict[str, str], query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        denied = self._denied(headers)
        if denied:
            return denied
        key = (query.get("task") or [""])[0]
        force = (query.get("force") or ["0"])[0] in ("1", "true", "yes")
        try:
            with self.lock:
                message = leases.release(self.rt, key, force=force)
        except OrchError as e:
            return (409 if e.exit_code == 4 else 400), {"error": str(e)}
        return 200, {"released": message}

    # -- the drain -----------------------------------------------------------------------

    def _drain_supervisor(self) -> None:
        """Run the drain; if it dies (anything at all), say so in the log and start it again
        after a short, growing pause: the relay never goes on answering 202 with no drain."""
        pause = 0.5
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self._drain_loop()
                return
            except Exception as e:
                if time.monotonic() - started > 60:
                    pause = 0.5  # it ran a good while: not a crash loop
                log.error("relay_drain_restarted", error=f"{type(e).__name__}: {e}", in_s=pause)
                self.stopping.wait(pause)
                pause = min(pause * 2, 30.0)

    def _drain_loop(self) -> None:
        rt: Runtime = open_runtime(self.cfg, actor="relay-drain")
        try:
            # A drain that restarts in this process would see its own earlier claims as
            # held by a live owner: drop them first.
            rt.store.inbox_release_claims(rt.owner)
            # Drain at once (a backlog from before a restart), then on every wake, one
            # delivery at a time until none is due. No dead minutes: the jobs a delivery
            # queued start as soon as it is handled, not at the end of a batch nor at the
            # tick; counting what it queued (not every claimable job) keeps the runners
            # already started for earlier deliveries from being started twice.
            while not self.stopping.is_set():
                try:
                    before = jobs.demand(rt)
                    done = sum(inbox.drain(rt, limit=1).values())
                    if done and (queued := jobs.demand(rt) - before) > 0:
                        jobs.start_now(rt, max_new=queued)
                except OrchError as e:  # the database was busy or failing: the next wake tries again
                    log.warning("relay_drain_failed", error=str(e))
                    done = 0
                if done:
                    continue
                self.wake.wait(timeout=5.0)
                self.wake.clear()
        finally:
            rt.close()


# -- strict HTTP/1.x parsing -----------------------------------------------------------------


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers (lower-cased names); _Reject on anything not plainly valid."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise _Reject(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Reject(505, "HTTP/1.0 or HTTP/1.1 only")
    if len(lines) - 1 > MAX_HEADERS:
        raise _Reject(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses folded (obs-fold) lines
            raise _Reject(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key in ("content-length", "transfer-encoding", "host") or "signature" in key:
                raise _Reject(400, f"header {name} given twice")
            continue
        headers[key] = value
    return method, target, version, headers


def _content_length(headers: dict[str, str], method: str) -> int:
    if "transfer-encoding" in headers:
        raise _Reject(501, "chunked or encoded bodies are not accepted; send Content-Length")
    value = headers.get("content-length")
    if value is None:
        if method == "POST":
            raise _Reject(411, "Content-Length is required")
        return 0
    if not _DIGITS.fullmatch(value):
        raise _Reject(400, "Content-Length must be a number")
    return int(value)


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)
