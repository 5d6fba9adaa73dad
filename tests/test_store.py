"""The store: CAS, ledger, migrations, locking, schema from the future."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from orch.errors import Busy, SchemaTooNew
from orch.identity import me
from orch.store import Audit, Message, NextJob, StageChange, Store, schema


def _store(tmp_path: Path, **kw: int) -> Store:
    return Store.open(tmp_path / "o.db", **kw)


def test_fresh_database_is_migrated_and_marked(tmp_path: Path) -> None:
    s = _store(tmp_path)
    assert s.schema_version() == schema.LATEST
    names = {r[0] for r in s.conn.execute("SELECT name FROM _sqlite_migrations")}
    assert names == {n for n, _ in schema.MIGRATIONS}
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cas_with_a_stale_version_changes_nothing(tmp_path: Path) -> None:
    s = _store(tmp_path)
    t = s.add_task(title="t", repo="r", stage="a", now=1, key="K-1", key_prefix="K", actor="x")
    change = StageChange(
        task_id=t.id,
        from_stage="a",
        to_stage="b",
        expected_version=t.version,
        retry=False,
        audit=Audit(t.id, "x", "stage_changed", {}),
        message=Message("task:K-1:v2", "moved"),
        job=NextJob("dev"),
    )
    assert s.commit_transition(change, now=2.0)
    # The same CAS again (stale version and stage): lost, and none of its follow-ups happen.
    rows = s.conn.execute(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM outbox), "
        "(SELECT count(*) FROM transitions)"
    ).fetchone()
    assert not s.commit_transition(change, now=2.0)
    assert (
        s.conn.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM outbox), "
            "(SELECT count(*) FROM transitions)"
        ).fetchone()
        == rows
    )
    task = s.get_task("K-1")
    assert task is not None and (task.stage, task.version) == ("b", 2)


def test_effect_ledger_start_is_a_compare_and_swap_on_the_row_seen(tmp_path: Path) -> None:
    s = _store(tmp_path)
    t = s.add_task(title="t", repo="r", stage="a", now=1, key=None, key_prefix="K", actor="x")
    at = {"stage": "a", "version": 1}
    assert s.start_effect(t.id, "a->b@v1", "merge", owner=me(), now=1, seen=None, **at) == ("started", None)
    other = me()._replace(host="elsewhere")
    # A second first start loses: the row exists.
    outcome, row = s.start_effect(t.id, "a->b@v1", "merge", owner=other, now=2, seen=None, **at)
    assert outcome == "changed" and row is not None and row.owner == me()
    # Two recoverers probed the same row: the first takes it, the second must look again.
    dead = me()._replace(pid=999_999_999)
    assert s.start_effect(t.id, "a->b@v1", "merge", owner=dead, now=3, seen=row, **at)[0] == "started"
    seen = s.get_effect(t.id, "a->b@v1", "merge")
    assert seen is not None and seen.owner == dead and seen.attempts == 2
    assert s.start_effect(t.id, "a->b@v1", "merge", owner=other, now=4, seen=seen, **at)[0] == "started"
    outcome, now = s.start_effect(t.id, "a->b@v1", "merge", owner=me(), now=5, seen=seen, **at)
    assert outcome == "changed" and now is not None and now.owner == other and now.attempts == 3
    # Ending is conditional on the owner too: a stale owner's end writes nothing.
    audit = Audit(t.id, "x", "e", {})
    assert not s.end_effect(t.id, "a->b@v1", "merge", state="done", result={}, now=6, audit=audit, owner=dead)
    assert s.end_effect(t.id, "a->b@v1", "merge", state="done", result={}, now=6, audit=audit, owner=other)
    # A task that moved on (a cancel) starts nothing.
    assert s.start_effect(t.id, "a->b@v1", "deploy", owner=me(), now=7, seen=None, stage="a", version=2) == (
        "moved",
        None,
    )
    assert s.get_effect(t.id, "a->b@v1", "deploy") is None


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    _store(tmp_path).close()
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    c.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SchemaTooNew) as e:
        Store.open(path)
    assert e.value.exit_code == 2 and "newer orch" in str(e.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_locked_past_the_timeout_is_busy_and_writes_nothing(tmp_path: Path) -> None:
    s = _store(tmp_path, busy_timeout_ms=200)
    holder = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Busy) as e:
            s.add_task(title="t", repo="r", stage="a", now=1, key="K-1", key_prefix="K", actor="x")
        assert e.value.exit_code == 4
    finally:
        holder.execute("ROLLBACK")
    assert s.get_task("K-1") is None


def test_a_writer_waits_for_a_short_lock(tmp_path: Path) -> None:
    s = _store(tmp_path, busy_timeout_ms=5000)
    holder = sqlite3.connect(tmp_path / "o.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("ROLLBACK")).start()
    t = s.add_task(title="t", repo="r", stage="a", now=1, key="K-1", key_prefix="K", actor="x")
    assert t.key == "K-1"


def test_outbox_dedups_on_the_change_key_and_claims_expire(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.notify("task:K-1:v2", None, "moved", now=1)
    s.notify("task:K-1:v2", None, "moved again", now=2)
    (n,) = s.pending_notifications(now=3)
    assert n.text == "moved"
    assert s.claim_notification(n.key, now=3)
    assert not s.claim_notification(n.key, now=4)  # claimed by a live sender
    assert s.pending_notifications(now=4) == []
    # The sender died before marking it sent: after the claim expires it is due again.
    assert [m.key for m in s.pending_notifications(now=3 + 121)] == ["task:K-1:v2"]
    assert s.claim_notification(n.key, now=3 + 121)
    s.notification_sent(n.key, now=3 + 122)
    assert s.pending_notifications(now=10_000) == []


def test_processes_racing_to_create_one_database_migrate_it_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "race.db"
    code = f"from orch.store import Store; Store.open({str(path)!r}).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(8)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    c = sqlite3.connect(path)
    assert c.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(schema.MIGRATIONS)
    assert c.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST


def test_the_row_mapper_converts_by_annotation_and_ignores_extra_columns() -> None:
    from typing import Any, NamedTuple

    from orch.identity import Owner
    from orch.store.rows import record

    class Rec(NamedTuple):
        id: int
        flag: bool
        detail: dict[str, Any]
        owner: Owner
        claim: Owner | None

    c = sqlite3.connect(":memory:")
    c.row_factory = sqlite3.Row
    row = c.execute(
        "SELECT 7 AS id, 1 AS flag, '{\"a\": [1]}' AS detail, 'h' AS owner_host, 'b' AS owner_boot, "
        "42 AS owner_pid, 's' AS owner_start, NULL AS claim_host, NULL AS claim_boot, NULL AS claim_pid, "
        "NULL AS claim_start, 'x' AS not_a_field"
    ).fetchone()
    got = record(Rec, row)
    assert got == Rec(7, True, {"a": [1]}, Owner("h", "b", 42, "s"), None)
    assert type(got.flag) is bool
    partial = c.execute(
        "SELECT 1 AS id, 0 AS flag, '{}' AS detail, 'h' AS owner_host, NULL AS owner_boot, "
        "NULL AS owner_pid, NULL AS owner_start, 'h2' AS claim_host, NULL AS claim_boot, NULL AS claim_pid, "
        "NULL AS claim_start"
    ).fetchone()
    # An owner recorded without its boot, pid or start (a claim from before they were kept).
    assert record(Rec, partial).claim == Owner("h2", "", 0, "")
