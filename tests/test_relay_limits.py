"""A real `orch relay serve` process under slow, stalled and broken clients (issue 10 item 3).

200 clients that never finish their headers and 20 that send less than their
Content-Length must neither hold the relay nor keep a good signed delivery from being
acknowledged and processed; each is closed within the configured timeout; bad framing
(`Content-Length: \\xb2`) is a 400 and a client that hangs up early costs no traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import Setup

from orch.store import Store

SECRET = "limits-secret"
TIMEOUT_S = 1.0


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def push_body(n: int) -> bytes:
    return json.dumps(
        {
            "ref": f"refs/heads/t{n}",
            "before": "0" * 40,
            "after": "a" * 40,
            "repository": {"full_name": "acme/app"},
        }
    ).encode()


@pytest.fixture
def relay(setup: Setup) -> Iterator[tuple[subprocess.Popen[str], int]]:
    setup.update_config(
        {"relay": {"header_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S, "max_connections": 256}}
    )
    proc, port = setup.relay(env={"ORCH_GITEA_WEBHOOK_SECRET": SECRET})
    yield proc, port
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def stderr_of(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    return err


def deliver(port: int, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "POST",
            "/hooks/gitea",
            body=body,
            headers={"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body)},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def wait_state(setup: Setup, item: int, deadline: float) -> str:
    store = Store.open(setup.config().store.db_path, create=False)
    try:
        while time.monotonic() < deadline:
            row = next(r for r in store.inbox_rows(limit=100) if r.id == item)
            if row.state != "pending":
                return row.state
            time.sleep(0.05)
        return "pending"
    finally:
        store.close()


def closed_within(socks: list[socket.socket], limit: float) -> float:
    """Seconds until every socket is closed by the relay (EOF or reset); fails past `limit`."""
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    while open_:
        left = limit - (time.monotonic() - t0)
        assert left > 0, f"{open_} of {len(socks)} connections still open after {limit} s"
        for key, _ in sel.select(timeout=left):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)  # a 408 first, then the end of the stream
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                open_ -= 1
    return time.monotonic() - t0


def test_200_stalled_clients_do_not_keep_a_good_delivery_out(
    setup: Setup, relay: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = relay
    stalled: list[socket.socket] = []
    t0 = time.monotonic()
    for _ in range(200):  # never finish their headers
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /hooks/gitea HTTP/1.1\r\nHost: relay\r\nX-Gitea-Event: push\r\n")
        stalled.append(s)
    for _ in range(20):  # promise 1000 bytes, send 10
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /hooks/gitea HTTP/1.1\r\nHost: relay\r\nContent-Length: 1000\r\n\r\n0123456789")
        stalled.append(s)
    opened = time.monotonic() - t0
    code, reply = deliver(port, push_body(1))
    assert code == 202 and reply["duplicate"] is False
    assert wait_state(setup, reply["id"], time.monotonic() + 10) == "done"
    # Each stalled client is cut off by its deadline (header or body), not held.
    took = closed_within(stalled, TIMEOUT_S + opened + 3.0)
    print(f"220 stalled connections opened in {opened:.2f} s, all closed {took:.2f} s later")
    err = stderr_of(proc)
    assert "Traceback" not in err, err


def test_a_slow_drip_client_meets_the_total_header_deadline(relay: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = relay
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.2)
    t0 = time.monotonic()
    closed = False
    for ch in b"POST /hooks/gitea HTTP/1.1\r\nX-Long-Header: " + b"a" * 100:
        try:
            s.sendall(bytes([ch]))  # one byte every 0.1 s: a per-read timeout would never fire
            if s.recv(4096) == b"":
                closed = True
                break
        except (TimeoutError, BlockingIOError):
            pass
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        time.sleep(0.1)
        if time.monotonic() - t0 > TIMEOUT_S + 3:
            break
    assert closed and time.monotonic() - t0 < TIMEOUT_S + 2
    s.close()
    assert "Traceback" not in stderr_of(proc)


def test_bad_framing_and_hang_ups_cost_no_traceback(relay: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = relay

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out

    # U+00B2 passes str.isdigit() and fails int(): the exact header.
    assert raw("POST /hooks/gitea HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n".encode("latin-1")).startswith(
        b"HTTP/1.1 400 "
    )
    assert raw(
        b"POST /hooks/gitea HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    ).startswith(b"HTTP/1.1 400 ")
    assert raw(b"POST /hooks/gitea HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").startswith(
        b"HTTP/1.1 501 "
    )
    assert raw(b"POST /hooks/gitea HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 411 ")
    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    for _ in range(5):  # hang up mid-body, and right after sending a full request
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /hooks/gitea HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        body = push_body(2)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(
                b"POST /hooks/gitea HTTP/1.1\r\nX-Gitea-Event: push\r\nX-Gitea-Signature: "
                + sign(body).encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
    assert deliver(port, push_body(3))[0] == 202  # still serving
    err = stderr_of(proc)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_past_max_connections_a_new_client_gets_503_at_once(setup: Setup) -> None:
    setup.update_config({"relay": {"header_timeout_s": 5, "max_connections": 5}})
    proc = setup.orch_popen(
        "relay", "serve", "--host", "127.0.0.1", "--port", "0", env={"ORCH_GITEA_WEBHOOK_SECRET": SECRET}
    )
    try:
        assert proc.stderr is not None
        port = int(re.search(r":(\d+)", proc.stderr.readline()).group(1))  # type: ignore[union-attr]
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        time.sleep(0.2)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - t0 < 1
        for s in held:
            s.close()
        time.sleep(0.2)
        assert deliver(port, push_body(4))[0] == 202
    finally:
        assert "Traceback" not in stderr_of(proc)
