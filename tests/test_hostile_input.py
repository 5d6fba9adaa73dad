"""Hostile input (issue 10 items 1, 2, 5, 7, 8, 10, 11), inbox claims (issue 11 item 8) and
Gitea 1.23 / relay start-up facts (issue 15 items 5, 10): one regression test per item, with
the exact input the issue describes. The relay runs in-process on 127.0.0.1 here; the slow
and stalled clients of item 3 are in test_relay_limits.py against a real relay process."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Setup, run_orch

from orch import log
from orch.app.relay import Relay
from orch.engine import inbox, tasks
from orch.errors import ConfigError, StoreError
from orch.identity import me, of_pid
from orch.webhooks import payloads

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GITEA_SECRET = "gitea-only-secret"
PLANE_SECRET = "plane-only-secret"
PLANE_APPROVED = {
    "event": "issue",
    "action": "updated",
    "webhook_id": "w-1",
    "workspace_id": "ws-1",
    "data": {
        "id": "9a28bd00-ed9c-4f5d-8be9-fc05cbb1fc57",
        "project": "p-1",
        "sequence_id": 1,
        "name": "Implement login",
        "state": {"id": "s-approved", "name": "Approved", "group": "started"},
    },
    "activity": {"field": "state_id", "old_value": "To Analyse", "new_value": "Approved"},
}
POISONED_PUSH = (
    b'{"ref":"refs/heads/x","before":"' + b"0" * 40 + b'","after":"' + b"a" * 40 + b'",'
    b'"repository":{"full_name":"\\ud800"}}'
)


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(relay: Relay, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*relay.address, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def rows(relay: Relay) -> list[dict]:
    with relay.lock:
        return [r.as_dict() for r in relay.rt.store.inbox_rows(limit=1000)]


def wait_done(relay: Relay, item: int) -> dict:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        row = next(r for r in rows(relay) if r["id"] == item)
        if row["state"] != "pending":
            return row
        time.sleep(0.02)
    raise AssertionError(f"inbox {item} not processed")


@pytest.fixture
def gitea_only(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    """A relay with only the Gitea secret set: the Plane one is unset (issue 10 item 1)."""
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    monkeypatch.delenv("ORCH_PLANE_WEBHOOK_SECRET", raising=False)
    r = Relay(setup.config(), host="127.0.0.1", port=0).start()
    yield r
    r.close()


# -- issue 10 item 1: cross-source forgery ----------------------------------------------------


def test_gitea_signed_plane_approve_is_refused_and_nothing_stored(gitea_only: Relay, setup: Setup) -> None:
    rt = setup.runtime()
    t = tasks.add(rt, "a task at the human gate")
    body = json.dumps(PLANE_APPROVED).encode()
    code, reply = post(
        gitea_only,
        "/hooks/gitea",
        body,
        {"X-Plane-Event": "issue", "X-Gitea-Signature": sign(GITEA_SECRET, body)},
    )
    assert code == 400 and "Plane headers on the gitea endpoint" in reply["error"]
    # Signed with the Gitea secret but sent as Plane's own signature header: not even read.
    code, _ = post(
        gitea_only,
        "/hooks/gitea",
        body,
        {"X-Plane-Event": "issue", "X-Plane-Signature": sign(GITEA_SECRET, body)},
    )
    assert code == 401
    assert rows(gitea_only) == []
    assert rt.store.latest_verdict(t.id, t.version) is None
    rt.close()


def test_plane_signed_gitea_status_is_refused(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PLANE_WEBHOOK_SECRET", PLANE_SECRET)
    monkeypatch.delenv("ORCH_GITEA_WEBHOOK_SECRET", raising=False)
    relay = Relay(setup.config(), host="127.0.0.1", port=0).start()
    try:
        body = json.dumps(
            {"sha": "a" * 40, "state": "success", "context": "ci", "repository": {"full_name": "acme/app"}}
        ).encode()
        code, reply = post(
            relay,
            "/hooks/plane",
            body,
            {"X-Gitea-Event": "status", "X-Plane-Signature": sign(PLANE_SECRET, body)},
        )
        assert code == 400 and "Gitea headers on the plane endpoint" in reply["error"]
        # The Gitea endpoint has no secret on this relay: it is not served at all.
        assert post(relay, "/hooks/gitea", body, {"X-Gitea-Event": "status"})[0] == 404
        assert rows(relay) == []
    finally:
        relay.close()


def test_orch_event_refuses_the_other_sources_headers(setup: Setup, tmp_path: Path) -> None:
    body, hdrs = tmp_path / "b.json", tmp_path / "h.json"
    body.write_text(json.dumps(PLANE_APPROVED))
    hdrs.write_text(json.dumps({"X-Plane-Event": "issue"}))
    out = setup.orch("event", "gitea", "--body", str(body), "--headers", str(hdrs))
    assert (
        out.returncode == 2 and "refused as a gitea delivery" in out.stderr and "Traceback" not in out.stderr
    )
    hdrs.write_text(json.dumps({"X-Gitea-Event": "status"}))
    out = setup.orch("event", "plane", "--body", str(body), "--headers", str(hdrs))
    assert out.returncode == 2 and "Gitea headers on the plane endpoint" in out.stderr
    assert json.loads(setup.orch("inbox", "list", "--json").stdout) == []


def test_a_row_stored_before_the_fix_is_read_as_its_source_and_parked(rt) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(PLANE_APPROVED).encode()
    rt.store.inbox_put(
        source="gitea",
        event="issue",
        delivery=None,
        digest="d",
        headers={"x-plane-event": "issue"},
        body=body,
        now=rt.now(),
    )
    assert inbox.drain(rt) == {"done": 0, "failed": 0, "parked": 1}
    assert "Plane headers on the gitea endpoint" in rt.store.inbox_rows()[0].error


# -- issue 10 item 2: a poisoned delivery -----------------------------------------------------


def test_lone_surrogate_push_is_refused_and_the_drain_lives_on(gitea_only: Relay) -> None:
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(GITEA_SECRET, POISONED_PUSH)}
    code, reply = post(gitea_only, "/hooks/gitea", POISONED_PUSH, headers)
    assert code == 400 and "repository.full_name holds a NUL or a lone surrogate" in reply["error"]
    nul = POISONED_PUSH.replace(b"\\ud800", b"acme/\\u0000app")
    assert (
        post(gitea_only, "/hooks/gitea", nul, {**headers, "X-Gitea-Signature": sign(GITEA_SECRET, nul)})[0]
        == 400
    )
    assert rows(gitea_only) == []
    good = POISONED_PUSH.replace(b"\\ud800", b"acme/app")
    code, reply = post(
        gitea_only, "/hooks/gitea", good, {**headers, "X-Gitea-Signature": sign(GITEA_SECRET, good)}
    )
    assert code == 202 and wait_done(gitea_only, reply["id"])["state"] == "done"


def test_tick_parks_a_poisoned_row_stored_by_an_older_relay(setup: Setup) -> None:
    rt = setup.runtime()
    rt.store.inbox_put(
        source="gitea",
        event="push",
        delivery=None,
        digest="poison",
        headers={"x-gitea-event": "push"},
        body=POISONED_PUSH,
        now=rt.now(),
    )
    rt.close()
    out = setup.orch("tick", "--json", env={"ORCH_LOG_LEVEL": "error"})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    row = json.loads(setup.orch("inbox", "list", "--json").stdout)[0]
    assert row["state"] == "parked" and "lone surrogate" in row["error"]
    assert "inbox_parked" in out.stderr and out.stderr.count("\n") == 1  # one line


def test_a_result_that_cannot_be_stored_is_escaped_not_fatal(rt) -> None:  # type: ignore[no-untyped-def]
    item, _ = rt.store.inbox_put(
        source="gitea", event="push", delivery=None, digest="x", headers={}, body=b"{}", now=rt.now()
    )
    rt.store.inbox_claim(now=rt.now(), owner=rt.owner)
    rt.store.inbox_done(item, now=rt.now(), result="moved \ud800 and \x00")
    assert rt.store.inbox_rows()[0].result == "moved \\ud800 and \\x00"


def test_the_relay_drain_restarts_itself_and_says_so(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    log_file = tmp_path / "relay.log"
    log.configure(fmt="text", level="info", path=str(log_file))
    real = inbox.drain
    calls = {"n": 0}

    def dies_once(rt, limit=500):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom from a bug")
        return real(rt, limit=limit)

    monkeypatch.setattr(inbox, "drain", dies_once)
    relay = Relay(setup.config(), host="127.0.0.1", port=0).start()
    try:
        good = POISONED_PUSH.replace(b"\\ud800", b"acme/app")
        code, reply = post(
            relay,
            "/hooks/gitea",
            good,
            {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(GITEA_SECRET, good)},
        )
        assert code == 202 and wait_done(relay, reply["id"])["state"] == "done"
    finally:
        relay.close()
        log.configure()
    text = log_file.read_text()
    assert "relay_drain_restarted error=RuntimeError: boom from a bug" in text
    assert "Traceback" not in text


# -- issue 10 item 5: `orch task add` is one transaction --------------------------------------


def test_task_add_writes_task_and_first_job_together(rt, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def io_error(*a, **k):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("orch.store.tasks.enqueue_in", io_error)  # the job insert inside add_task
    with pytest.raises(StoreError, match="disk I/O error"):
        tasks.add(rt, "half made?")
    assert rt.store.list_tasks() == []  # no task without its job
    monkeypatch.undo()
    t = tasks.add(rt, "whole")
    assert [j.agent for j in rt.store.jobs(task_id=t.id, states=("queued",))] == ["analyst"]


# -- issue 10 item 7: a damaged or read-only database ----------------------------------------


def _damage(db: Path, how: str) -> None:
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    if how == "random":
        import random

        rng = random.Random(1007)
        print("seed 1007")
        db.write_bytes(bytes(rng.getrandbits(8) for _ in range(8192)))
    elif how == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    else:  # header-only
        db.write_bytes(db.read_bytes()[:100])


@pytest.mark.parametrize(
    ("how", "commands"),
    [
        (
            "random",
            [["task", "list"], ["queue"], ["tick"], ["inbox", "list"], ["relay", "serve", "--port", "0"]],
        ),
        ("truncated", [["task", "add", "x"], ["tick"]]),
        ("header-only", [["queue"], ["relay", "serve", "--port", "0"]]),
    ],
)
def test_a_damaged_database_is_one_line_naming_the_file(
    setup: Setup, how: str, commands: list[list[str]]
) -> None:
    rt = setup.runtime()
    for i in range(30):  # enough pages that a third of the file cuts through tables
        tasks.add(rt, f"task {i} " + "x" * 400)
    rt.close()
    db = setup.config().store.db_path
    _damage(db, how)
    env = {"ORCH_GITEA_WEBHOOK_SECRET": "s"}
    for cmd in commands:
        out = setup.orch(*cmd, env=env, timeout=20)
        assert out.returncode == 1, (cmd, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, (cmd, out.stderr)
        assert str(db) in out.stderr and ("restore a backup" in out.stderr or "orch init" in out.stderr), (
            out.stderr
        )
    doctor = setup.orch("doctor", "--json")
    assert "Traceback" not in doctor.stderr and doctor.returncode != 0
    assert any(str(db) in f["problem"] for f in json.loads(doctor.stdout)["findings"])


def test_a_read_only_database_gets_503_and_the_relay_keeps_running(gitea_only: Relay) -> None:
    # Root ignores file modes, so the read-only mount is SQLite's own: the same
    # SQLITE_READONLY error a read-only volume gives.
    good = POISONED_PUSH.replace(b"\\ud800", b"acme/app")
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(GITEA_SECRET, good)}
    with gitea_only.lock:
        gitea_only.rt.store.conn.execute("PRAGMA query_only = 1")
    code, reply = post(gitea_only, "/hooks/gitea", good, headers)
    assert code == 503 and "read-only" in reply["error"] and "make both writable" in reply["error"]
    with gitea_only.lock:
        gitea_only.rt.store.conn.execute("PRAGMA query_only = 0")
    code, reply = post(gitea_only, "/hooks/gitea", good, headers)
    assert code == 202 and wait_done(gitea_only, reply["id"])["state"] == "done"


# -- issue 10 item 8: reading commands never create state ------------------------------------


def test_reading_commands_on_a_missing_database_create_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "orch.toml"
    state = tmp_path / "unmounted" / "volume"
    cfg.write_text(f'[store]\npath = "{state}/orch.db"\n[repos.app]\npath = "."\n')
    for cmd in (["task", "list"], ["queue"], ["inbox", "list"], ["history", "X-1"], ["advance", "X-1"]):
        out = run_orch("-c", str(cfg), *cmd, cwd=tmp_path)
        assert out.returncode == 1 and "Traceback" not in out.stderr, (cmd, out.stderr)
        assert f"{state}/orch.db: no orch database here: run `orch init`" in out.stderr
    assert not (tmp_path / "unmounted").exists()


# -- issue 10 item 10: log line forging ------------------------------------------------------


def test_a_newline_in_a_plane_item_id_stays_on_one_log_line(tmp_path: Path) -> None:
    forged = "9a28bd00\n2026-01-01T00:00:00 error   relay_accepted source=plane id=1\x1b[2J"
    path = tmp_path / "orch.log"
    log.configure(fmt="text", level="info", path=str(path))
    try:
        log.warning("plane_item_unknown", item=forged, title="\u2028\ud800")
    finally:
        log.configure()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert "item=9a28bd00\\n2026-01-01T00:00:00 error   relay_accepted" in lines[0]
    assert "\\x1b[2J" in lines[0] and "title=\\u2028\\ud800" in lines[0]


# -- issue 10 item 11 (first part): the legacy secret, whatever its escaping -----------------


def test_an_escaped_secret_key_is_removed_at_any_level(rt) -> None:  # type: ignore[no-untyped-def]
    body = (
        b'{"secr\\u0065t": "top-hunter2", "ref": "refs/heads/x", "before": "' + b"0" * 40 + b'", '
        b'"after": "' + b"a" * 40 + b'", "repository": {"full_name": "acme/app", '
        b'"hooks": [{"SECRET": "deep-hunter2"}]}}'
    )
    inbox.put(rt, "gitea", body, {"X-Gitea-Event": "push"})
    db = rt.config.store.db_path
    stored = db.read_bytes() + Path(f"{db}-wal").read_bytes()
    assert b"top-hunter2" not in stored and b"deep-hunter2" not in stored
    assert inbox.drain(rt)["done"] == 1


# -- issue 11 item 8: inbox claims name their claimer ----------------------------------------


def test_a_dead_claimers_delivery_is_taken_at_once(setup: Setup) -> None:
    rt = setup.runtime()
    item, _ = rt.store.inbox_put(
        source="gitea", event="push", delivery=None, digest="c", headers={}, body=b"{}", now=rt.now()
    )
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claimer = of_pid(child.pid)
        assert claimer is not None
        assert rt.store.inbox_claim(now=rt.now(), owner=claimer).id == item
        assert rt.store.inbox_claim(now=rt.now() + 60, owner=me()) is None  # alive: held
        listed = json.loads(setup.orch("inbox", "list", "--json").stdout)[0]
        assert listed["claimed_by"]["pid"] == child.pid and listed["claimed_by"]["alive"] is True
        text = setup.orch("inbox", "list").stdout
        assert f"claimed by {claimer.host}/pid {child.pid} (alive)" in text
    finally:
        child.kill()
        child.wait()
    assert "(dead)" in setup.orch("inbox", "list").stdout
    taken = rt.store.inbox_claim(now=rt.now(), owner=me())  # no waiting for an expiry
    assert taken is not None and taken.id == item and taken.claim == me()
    rt.close()


def test_a_claim_from_another_host_expires_and_a_live_one_meets_the_ceiling(rt) -> None:  # type: ignore[no-untyped-def]
    rt.store.inbox_put(source="gitea", event="push", delivery=None, digest="h", headers={}, body=b"{}", now=0)
    elsewhere = me()._replace(host="another-host")
    assert rt.store.inbox_claim(now=100, owner=elsewhere) is not None
    assert rt.store.inbox_claim(now=399, owner=me()) is None
    assert rt.store.inbox_claim(now=401, owner=me()) is not None  # 300 s for a claimer we cannot check
    assert rt.store.inbox_claim(now=500, owner=me(), ceiling_s=1000) is None  # we are alive
    assert rt.store.inbox_claim(now=1402, owner=me(), ceiling_s=1000) is not None


# -- issue 15 item 5: Gitea 1.23 status webhooks with an empty X-Gitea-Event -----------------


def test_gitea_123_status_with_an_empty_event_header(gitea_only: Relay) -> None:
    body = json.dumps(
        {"sha": "b" * 40, "state": "success", "context": "ci/build", "repository": {"full_name": "acme/app"}}
    ).encode()
    headers = {
        "X-Gitea-Event": "",
        "X-Gitea-Event-Type": "status",
        "X-Gitea-Signature": sign(GITEA_SECRET, body),
    }
    assert isinstance(payloads.parse_for("gitea", body, headers), payloads.GiteaStatus)
    code, reply = post(gitea_only, "/hooks/gitea", body, headers)
    assert code == 202
    row = wait_done(gitea_only, reply["id"])
    assert row["event"] == "status" and row["state"] == "done" and "unknown" not in (row["result"] or "")


# -- issue 15 item 10: the relay refuses to start without the secrets it needs ---------------


def test_relay_refuses_to_start_without_a_configured_sources_secret(setup: Setup) -> None:
    setup.update_config(
        {
            "repos": {"app": {"forge_repo": "acme/app"}},
            "forge": {"kind": "gitea"},
            "gitea": {"base_url": "http://127.0.0.1:9"},
        }
    )
    cfg = setup.config()
    with pytest.raises(ConfigError, match="gitea is configured but ORCH_GITEA_WEBHOOK_SECRET is not set"):
        Relay(cfg, host="127.0.0.1", port=0)


def test_relay_serve_with_no_secret_at_all_exits_2(setup: Setup) -> None:
    out = setup.orch("relay", "serve", "--port", "0", timeout=20)
    assert out.returncode == 2 and "no webhook secret is set" in out.stderr and "Traceback" not in out.stderr


def test_a_delivery_claimed_by_a_killed_process_is_done_seconds_after_restart(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 8: the drain that claimed it was SIGKILLed (as a relay dies); the
    next relay takes the delivery at once instead of after a 300 s expiry."""
    rt = setup.runtime()
    good = POISONED_PUSH.replace(b"\\ud800", b"acme/app")
    item, _ = inbox.put(rt, "gitea", good, {"X-Gitea-Event": "push"})
    rt.close()
    db = setup.config().store.db_path
    code = (
        "import os, signal, time\n"
        "from orch.identity import me\nfrom orch.store import Store\n"
        f"s = Store.open({str(db)!r}, create=False)\n"
        "assert s.inbox_claim(now=time.time(), owner=me()) is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert died.returncode == -9, died.stderr
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    t0 = time.monotonic()
    relay = Relay(setup.config(), host="127.0.0.1", port=0).start()
    try:
        assert wait_done(relay, item)["state"] == "done"
    finally:
        relay.close()
    assert time.monotonic() - t0 < 5


def test_a_newline_in_a_plane_field_never_forges_a_line_end_to_end(setup: Setup, tmp_path: Path) -> None:
    """The same through `orch event plane` with a Plane tracker: the project id of the
    delivery reaches the `inbox_done` line (its result names the unknown project)."""
    setup.update_config(
        {
            "tracker": {"kind": "plane"},
            "plane": {
                "base_url": "http://127.0.0.1:9",
                "workspace": "ws",
                "projects": {"ENG": {"id": "p-1", "repo": "app"}},
            },
        }
    )
    forged = "p-2\n2026-01-01T00:00:00 error   relay_accepted source=plane id=999"
    doc = {**PLANE_APPROVED, "data": {**PLANE_APPROVED["data"], "project": forged}}  # type: ignore[dict-item]
    body, hdrs, log_file = tmp_path / "b.json", tmp_path / "h.json", tmp_path / "orch.log"
    body.write_text(json.dumps(doc))
    hdrs.write_text(json.dumps({"X-Plane-Event": "issue"}))
    env = {"PLANE_API_KEY": "k", "ORCH_LOG_LEVEL": "info", "ORCH_LOG_FILE": str(log_file)}
    out = setup.orch("event", "plane", "--body", str(body), "--headers", str(hdrs), env=env)
    assert out.returncode == 0, out.stderr
    lines = log_file.read_text().splitlines()
    done = [line for line in lines if " inbox_done " in line]
    assert len(done) == 1 and "project p-2\\n2026-01-01T00:00:00 error   relay_accepted" in done[0], lines
    assert not any(line.startswith("2026-01-01T00:00:00") for line in lines)
