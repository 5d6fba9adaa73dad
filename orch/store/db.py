"""The Store: orch's only SQL, over one SQLite file in WAL mode.

Writes go through `write()`: `BEGIN IMMEDIATE` (the write lock is taken before any read
that decides the write), retried with jitter when the database is locked. SQLite's own
busy handler is not fair (under bursts some writers starve for seconds), so each attempt
waits only a short slice in SQLite and the rest of the budget is spent in our loop,
where sleeping with jitter lets writers interleave. Past `busy_timeout_ms` the write
raises `Busy` (exit 4) having changed nothing.

`durable=True` runs the transaction with `synchronous=FULL`: used for writes that
precede an acknowledgement or an irreversible act (an effect marked started, an inbox
insert), which must survive power loss, not just a crash. Elsewhere WAL + NORMAL.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from orch.errors import Busy, SchemaTooNew, StoreError
from orch.identity import Owner, is_alive
from orch.identity import host as identity_host
from orch.store import schema
from orch.store.models import (
    Audit,
    AuditRow,
    EffectRow,
    Job,
    Lease,
    Notification,
    Task,
    Verdict,
)

# One SQLite busy-wait slice; the rest of the budget is our jittered loop.
CLAIM_S = 120.0  # an outbox claim older than this belongs to a sender that died
_SLICE_MS = 5
TERMINAL_JOB_STATES = ("succeeded", "failed", "timed_out", "stalled", "cancelled", "reaped")


def _reclaimed(task_id: int, actor: str, dead: Lease) -> Audit:
    return Audit(
        task_id,
        actor,
        "lease_reclaimed",
        {"lease": dead.name, "dead_owner": dead.owner.as_dict(), "dead_actor": dead.actor},
    )


_UNCLAIM = "claimed_at = NULL, claim_host = NULL, claim_boot = NULL, claim_pid = NULL, claim_start = NULL"


def _claim_lapsed(r: sqlite3.Row, now: float, claim_s: float, ceiling_s: float) -> bool:
    """May an inbox claim be taken over? (See Store.inbox_claim.)"""
    age = now - float(r["claimed_at"])
    if age >= ceiling_s:
        return True
    if not r["claim_host"]:  # a claim from before claimers were recorded
        return age >= claim_s
    claimer = Owner(r["claim_host"], r["claim_boot"] or "", int(r["claim_pid"] or 0), r["claim_start"] or "")
    if claimer.host != identity_host():
        return age >= claim_s
    return not is_alive(claimer)


def _text(value: str, limit: int) -> str:
    """`value` as text SQLite can store: lone surrogates and NULs escaped, length capped."""
    value = value[:limit]
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _has_database(path: Path) -> bool:
    """Is there a database at `path` (a non-empty file, or an empty one with its WAL)?"""
    try:
        if path.stat().st_size > 0:
            return True
        return Path(f"{path}-wal").stat().st_size > 0
    except OSError:
        return False


def _failure(path: Path, e: sqlite3.Error) -> str:
    """One line: the file, what SQLite said, and what to do about it."""
    said = str(e) or type(e).__name__
    low = said.lower()
    if "readonly" in low or "read-only" in low:
        todo = (
            "the file or its directory is read-only; make both writable by this user "
            f"(SQLite also writes {path.name}-wal and {path.name}-shm beside it), "
            "or mount the volume read-write"
        )
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        todo = (
            "the file is damaged or is not an orch database; move it aside and restore a backup "
            "(or run `orch init` to start an empty one)"
        )
    elif "unable to open" in low:
        todo = "check that the file and its directory exist and are readable and writable by this user"
    elif "disk i/o" in low or "disk is full" in low or "database or disk is full" in low:
        todo = "the disk failed or is full; check the volume, then restore a backup if the file is damaged"
    else:
        return f"{path}: {said}"
    return f"{path}: {said}: {todo}"


def _locked(e: sqlite3.OperationalError) -> bool:
    msg = str(e)
    return "locked" in msg or "busy" in msg


def _owner(o: Owner) -> tuple[str, str, int, str]:
    return (o.host, o.boot_id, o.pid, o.start_time)


_STARTED_BY = (
    " AND state = 'started' AND owner_host = ? AND owner_boot = ? AND owner_pid = ? AND owner_start = ?"
)


class Store:
    """orch's state in one SQLite file. Open with `Store.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, busy_timeout_ms: int):
        self.conn = conn
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    # -- opening and migrating -------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000, create: bool = True) -> Store:
        """Open (and migrate) the database at `path`. With `create=False` a missing or empty
        file is an error that names the path and says `orch init`: a reading command on an
        unmounted volume must not start a second, empty state beside the real one."""
        path = Path(path)
        if not create and not _has_database(path):
            raise StoreError(
                f"{path}: no orch database here: run `orch init` to create one "
                "(or fix [store] path, or mount the volume that holds it)"
            )
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"{path}: cannot create its directory: {e.strerror or e}") from None
        try:
            conn = sqlite3.connect(
                str(path), isolation_level=None, timeout=_SLICE_MS / 1000, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(_failure(path, e)) from None
        conn.row_factory = sqlite3.Row
        store = cls(conn, path, busy_timeout_ms=busy_timeout_ms)
        try:
            store._prepare()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.002
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _locked(e):
                    raise StoreError(_failure(self.path, e)) from None
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"{self.path}: database stayed locked for {self.busy_timeout_ms} ms; "
                        "nothing was changed, try again"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.05)
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
                raise  # a bug in orch's SQL, not a state of the file
            except sqlite3.DatabaseError as e:  # not a database, malformed, I/O error...
                raise StoreError(_failure(self.path, e)) from None

    def _prepare(self) -> None:
        # Read the version before anything that could write (journal_mode=WAL writes the
        # header): a database from a newer orch must be left exactly as it was.
        version = self._retrying(lambda: self.conn.execute("PRAGMA user_version").fetchone()[0])
        # A header-only or truncated file can answer the pragma and fail on the first page
        # read: read the schema once here, so the damage is reported on open, in one line.
        self._retrying(lambda: self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone())
        if version > schema.LATEST:
            raise SchemaTooNew(
                f"{self.path}: database schema {version} was written by a newer orch "
                f"(this one knows {schema.LATEST}); refusing to touch it"
            )
        self._retrying(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))
        self._retrying(lambda: self.conn.execute("PRAGMA synchronous=NORMAL"))
        self._retrying(lambda: self.conn.execute("PRAGMA foreign_keys=ON"))
        if version < schema.LATEST:
            self._migrate()

    def _migrate(self) -> None:
        # Imported here only: the hot path never needs sqlite_utils (~90 ms of imports).
        import sqlite_utils
        from sqlite_utils.migrations import Migrations

        migrations = Migrations(schema.MIGRATION_SET)
        for name, fn in schema.MIGRATIONS:
            migrations(name=name)(fn)
        known = {name for name, _ in schema.MIGRATIONS}
        db = sqlite_utils.Database(self.conn)
        with self.write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= schema.LATEST:
                return  # another process migrated while we waited for the lock
            unknown = {m.name for m in migrations.applied(db)} - known
            if unknown:
                raise SchemaTooNew(
                    f"{self.path}: has migrations this orch does not know: {', '.join(sorted(unknown))}"
                )
            # Inside our BEGIN IMMEDIATE, Migrations' atomic() nests as savepoints, so
            # two processes creating one fresh database cannot both migrate it.
            migrations.apply(db)
            self.conn.execute(f"PRAGMA user_version = {schema.LATEST}")

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), retried while the database is locked."""
        if self.conn.in_transaction:
            raise StoreError("nested write transaction")  # a bug, not a state
        if durable:
            self._retrying(lambda: self.conn.execute("PRAGMA synchronous=FULL"))
        try:
            self._retrying(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self.conn
            except BaseException as e:
                if self.conn.in_transaction:  # SQLite may have rolled back already (I/O error)
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError) and not isinstance(
                    e, sqlite3.IntegrityError | sqlite3.ProgrammingError
                ):
                    raise StoreError(_failure(self.path, e)) from None
                raise
            self._retrying(lambda: self.conn.execute("COMMIT"))
        finally:
            if durable:
                with suppress(sqlite3.Error):
                    self.conn.execute("PRAGMA synchronous=NORMAL")

    def _read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self._retrying(lambda: self.conn.execute(sql, params).fetchall())

    def _one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    def schema_version(self) -> int:
        return int(self._retrying(lambda: self.conn.execute("PRAGMA user_version").fetchone()[0]))

    def integrity(self) -> str:
        return str(self._retrying(lambda: self.conn.execute("PRAGMA quick_check").fetchone()[0]))

    # -- tasks -----------------------------------------------------------------------

    @staticmethod
    def _task(r: sqlite3.Row) -> Task:
        return Task(
            id=r["id"],
            key=r["key"],
            title=r["title"],
            repo=r["repo"],
            stage=r["stage"],
            version=r["version"],
            retries=r["retries"],
            blocked=bool(r["blocked"]),
            block_reason=r["block_reason"],
            escalated=bool(r["escalated"]),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            waiting_on=r["waiting_on"],
            tracker_ref=r["tracker_ref"],
        )

    def add_task(
        self,
        *,
        title: str,
        repo: str,
        stage: str,
        now: float,
        key: str | None,
        key_prefix: str,
        actor: str,
        agent: str | None = None,
    ) -> Task:
        """Insert a task; with no key, the key is `<prefix>-<id>`. A taken key is a UsageError.

        With `agent`, the task's first job is queued in the same transaction: a failure
        between the two can never leave a task that no actor would ever give a job."""
        from orch.errors import UsageError

        with self.write() as c:
            placeholder = key or f"pending-{random.getrandbits(64):x}"
            try:
                cur = c.execute(
                    "INSERT INTO tasks (key, title, repo, stage, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (placeholder, title, repo, stage, now, now),
                )
            except sqlite3.IntegrityError:
                raise UsageError(f"task {key} exists already") from None
            task_id = int(cur.lastrowid or 0)
            if key is None:
                key = f"{key_prefix}-{task_id}"
                try:
                    c.execute("UPDATE tasks SET key = ? WHERE id = ?", (key, task_id))
                except sqlite3.IntegrityError:
                    raise UsageError(f"task {key} exists already (pass --key)") from None
            self._audit(
                c,
                Audit(task_id, actor, "created", {"title": title, "repo": repo}, None, stage),
                now,
            )
            if agent:
                self._enqueue(c, task_id=task_id, agent=agent, stage=stage, task_version=1, now=now)
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row)

    def get_task(self, key: str) -> Task | None:
        r = self._one("SELECT * FROM tasks WHERE key = ?", (key,))
        return self._task(r) if r else None

    def get_task_by_id(self, task_id: int) -> Task | None:
        r = self._one("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return self._task(r) if r else None

    def list_tasks(self, *, stage: str | None = None, limit: int = 1000) -> list[Task]:
        if stage:
            rows = self._read("SELECT * FROM tasks WHERE stage = ? ORDER BY id LIMIT ?", (stage, limit))
        else:
            rows = self._read("SELECT * FROM tasks ORDER BY id LIMIT ?", (limit,))
        return [self._task(r) for r in rows]

    def quiet_tasks(self, stages: tuple[str, ...], *, older_than: float, limit: int = 10_000) -> list[Task]:
        """Tasks at these stages untouched since `older_than`, with no queued or running job:
        the reconciler's candidates, oldest first (indexed by stage, updated_at)."""
        if not stages:
            return []
        rows = self._read(
            f"SELECT * FROM tasks WHERE stage IN ({','.join('?' * len(stages))}) AND updated_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = tasks.id "
            "AND j.state IN ('queued', 'running')) ORDER BY updated_at LIMIT ?",
            (*stages, older_than, limit),
        )
        return [self._task(r) for r in rows]

    def quiet_count(self, stage: str, *, older_than: float) -> int:
        """How many tasks `quiet_tasks` would return for one stage, without loading them."""
        r = self._one(
            "SELECT count(*) FROM tasks WHERE stage = ? AND updated_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = tasks.id "
            "AND j.state IN ('queued', 'running'))",
            (stage, older_than),
        )
        return int(r[0]) if r else 0

    def set_blocked(
        self,
        task_id: int,
        *,
        blocked: bool,
        reason: str | None,
        now: float,
        audit: Audit,
        notify: tuple[str, str] | None = None,
        escalated: bool | None = None,
        reset_retries: bool = False,
    ) -> bool:
        """Block or unblock; False if the task already was in that state."""
        with self.write() as c:
            sets = "blocked = ?, block_reason = ?, updated_at = ?"
            params: list[Any] = [int(blocked), reason, now]
            if reset_retries:
                sets += ", retries = 0"
            if escalated is not None:
                sets += ", escalated = ?"
                params.append(int(escalated))
            cur = c.execute(
                f"UPDATE tasks SET {sets} WHERE id = ? AND blocked = ?",
                (*params, task_id, int(not blocked)),
            )
            if cur.rowcount != 1:
                return False
            self._audit(c, audit, now)
            if notify:
                self._notify(c, notify[0], task_id, notify[1], now)
        return True

    def commit_transition(
        self,
        *,
        task_id: int,
        expected_stage: str,
        expected_version: int,
        new_stage: str,
        retry: bool,
        now: float,
        audit: Audit,
        job: dict[str, Any] | None = None,
        notification: tuple[str, str] | None = None,
        escalate: str | None = None,
        finishes: bool = False,
        unless_in_flight: Callable[[EffectRow], bool] | None = None,
    ) -> bool:
        """The only write of a stage: compare-and-swap, with its follow-ups in one transaction.

        The follow-ups (the next agent job, the outbox message, the audit row, releasing
        the tasks that waited on this one when `finishes`) commit with the CAS or not at
        all, so a crash after the CAS loses none of them. With `unless_in_flight` (a
        cancel), nothing is written while one of the task's effects past its point of no
        return is in flight by that test: checked in the same transaction, so an effect
        either reached that point first (and the cancel waits) or never does.
        """
        with self.write() as c:
            if unless_in_flight is not None:
                acting = c.execute(
                    "SELECT * FROM effects WHERE task_id = ? AND acting = 1 AND state != 'done'", (task_id,)
                ).fetchall()
                if any(unless_in_flight(self._effect(r)) for r in acting):
                    return False
            cur = c.execute(
                "UPDATE tasks SET stage = ?, version = version + 1, retries = retries + ?, "
                "updated_at = ? WHERE id = ? AND stage = ? AND version = ?",
                (new_stage, int(retry), now, task_id, expected_stage, expected_version),
            )
            if cur.rowcount != 1:
                return False
            self._audit(c, audit, now)
            if escalate:
                c.execute(
                    "UPDATE tasks SET blocked = 1, escalated = 1, block_reason = ? WHERE id = ?",
                    (escalate, task_id),
                )
            elif job:
                self._enqueue(
                    c,
                    task_id=task_id,
                    agent=job["agent"],
                    stage=new_stage,
                    task_version=expected_version + 1,
                    now=now,
                    note=job.get("note"),
                )
            if notification:
                self._notify(c, notification[0], task_id, notification[1], now)
            if finishes:
                self._release_dependents(c, task_id, now, audit.actor)
        return True

    def _release_dependents(self, c: sqlite3.Connection, task_id: int, now: float, actor: str) -> None:
        key = c.execute("SELECT key FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
        for dep in c.execute(
            "SELECT t.id, t.key, t.waiting_on FROM deps d JOIN tasks t ON t.id = d.task_id "
            "WHERE d.on_task_id = ?",
            (task_id,),
        ).fetchall():
            c.execute("UPDATE tasks SET waiting_on = max(waiting_on - 1, 0) WHERE id = ?", (dep["id"],))
            if dep["waiting_on"] <= 1:
                c.execute("UPDATE jobs SET ready = 1 WHERE task_id = ? AND state = 'queued'", (dep["id"],))
                self._audit(c, Audit(dep["id"], actor, "released", {"by": key}), now)
                self._notify(
                    c,
                    f"released:{dep['key']}:{key}",
                    dep["id"],
                    f"{dep['key']} no longer waits: {key} is finished",
                    now,
                )

    # -- audit -----------------------------------------------------------------------

    @staticmethod
    def _audit(c: sqlite3.Connection, a: Audit, now: float) -> None:
        c.execute(
            "INSERT INTO transitions (task_id, at, actor, event, from_stage, to_stage, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (a.task_id, now, a.actor, a.event, a.from_stage, a.to_stage, a.detail_json()),
        )

    def audit(self, a: Audit, *, now: float) -> None:
        with self.write() as c:
            self._audit(c, a, now)

    def history(self, task_id: int) -> list[AuditRow]:
        rows = self._read("SELECT * FROM transitions WHERE task_id = ? ORDER BY id", (task_id,))
        return [
            AuditRow(
                r["id"],
                r["at"],
                r["actor"],
                r["event"],
                r["from_stage"],
                r["to_stage"],
                json.loads(r["detail"]),
            )
            for r in rows
        ]

    def count_events(self, task_id: int, event: str) -> int:
        r = self._one("SELECT count(*) FROM transitions WHERE task_id = ? AND event = ?", (task_id, event))
        return int(r[0]) if r else 0

    # -- leases ----------------------------------------------------------------------

    @staticmethod
    def _lease(r: sqlite3.Row) -> Lease:
        return Lease(
            name=r["name"],
            owner=Owner(r["owner_host"], r["owner_boot"], r["owner_pid"], r["owner_start"]),
            actor=r["actor"],
            purpose=r["purpose"],
            acquired_at=r["acquired_at"],
        )

    def get_lease(self, name: str) -> Lease | None:
        r = self._one("SELECT * FROM leases WHERE name = ?", (name,))
        return self._lease(r) if r else None

    def list_leases(self) -> list[Lease]:
        return [self._lease(r) for r in self._read("SELECT * FROM leases ORDER BY acquired_at")]

    def acquire_lease(
        self,
        name: str,
        *,
        owner: Owner,
        actor: str,
        purpose: str,
        now: float,
        audit_task: int | None = None,
        alive: Callable[[Owner], bool] = is_alive,
        detail: dict[str, Any] | None = None,
    ) -> tuple[bool, Lease | None]:
        """Take `name` for `owner`. Returns (acquired, holder-or-reclaimed-from).

        (True, None): taken fresh or already ours. (True, old): reclaimed from a dead
        owner, audited. (False, holder): a live owner holds it; nothing written.
        """
        # Read first, outside any transaction: a loser of a race learns it lost without
        # taking the write lock that the winner needs next (WAL readers never block).
        seen = self._one("SELECT * FROM leases WHERE name = ?", (name,))
        if seen is not None:
            current = self._lease(seen)
            if current.owner != owner and alive(current.owner):
                return False, current
        with self.write() as c:
            r = c.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            held = self._lease(r) if r else None
            if held is not None:
                if held.owner == owner:
                    return True, None
                if alive(held.owner):
                    return False, held
                c.execute("DELETE FROM leases WHERE name = ?", (name,))
                if audit_task is not None:
                    self._audit(c, _reclaimed(audit_task, actor, held), now)
            c.execute(
                "INSERT INTO leases (name, owner_host, owner_boot, owner_pid, owner_start, actor, "
                "purpose, acquired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, owner.host, owner.boot_id, owner.pid, owner.start_time, actor, purpose, now),
            )
            if audit_task is not None:
                self._audit(
                    c, Audit(audit_task, actor, "lease_acquired", {"lease": name, **(detail or {})}), now
                )
        return True, held

    def release_lease(
        self, name: str, *, owner: Owner | None, now: float, audit: Audit | None = None
    ) -> bool:
        """Release `name`; only if held by `owner` unless owner is None (forced)."""
        with self.write() as c:
            if owner is None:
                cur = c.execute("DELETE FROM leases WHERE name = ?", (name,))
            else:
                cur = c.execute(
                    "DELETE FROM leases WHERE name = ? AND owner_host = ? AND owner_boot = ? "
                    "AND owner_pid = ? AND owner_start = ?",
                    (name, owner.host, owner.boot_id, owner.pid, owner.start_time),
                )
            if cur.rowcount and audit is not None:
                self._audit(c, audit, now)
            return cur.rowcount == 1

    def dead_leases(self, names: tuple[str, ...], alive: Callable[[Owner], bool] = is_alive) -> list[Lease]:
        """Those of `names` held by a dead owner: one read, free when none is held."""
        rows = self._read(f"SELECT * FROM leases WHERE name IN ({','.join('?' * len(names))})", names)
        return [lease for lease in map(self._lease, rows) if not alive(lease.owner)]

    def clear_dead_lease(
        self,
        name: str,
        *,
        actor: str,
        now: float,
        audit_task: int | None,
        alive: Callable[[Owner], bool] = is_alive,
    ) -> Lease | None:
        """Remove `name` if its owner is dead; returns the removed lease. Reads first: free when absent."""
        held = self.get_lease(name)
        if held is None or alive(held.owner):
            return None
        with self.write() as c:
            cur = c.execute(
                "DELETE FROM leases WHERE name = ? AND owner_pid = ? AND owner_start = ? AND owner_boot = ?",
                (name, held.owner.pid, held.owner.start_time, held.owner.boot_id),
            )
            if cur.rowcount and audit_task is not None:
                self._audit(c, _reclaimed(audit_task, actor, held), now)
        return held if cur.rowcount else None

    def take_merge_line(
        self, repo: str, *, task_id: int, stage: str, version: int, now: float, max_age_s: float
    ) -> int | None:
        """Take (or keep) `repo`'s merge line for this task visit; returns the id of the
        task that holds it instead, or None when it is ours. A holder that left its visit
        (merged, sent back, cancelled), is blocked, or has held it past `max_age_s` loses it."""
        with self.write() as c:
            r = c.execute("SELECT * FROM merge_line WHERE repo = ?", (repo,)).fetchone()
            if r is not None and (r["task_id"], r["task_version"]) == (task_id, version):
                return None
            if r is not None and now - r["since"] < max_age_s:
                h = c.execute(
                    "SELECT stage, version, blocked FROM tasks WHERE id = ?", (r["task_id"],)
                ).fetchone()
                if (
                    h is not None
                    and (h["stage"], h["version"]) == (stage, r["task_version"])
                    and not h["blocked"]
                ):
                    return int(r["task_id"])
            c.execute(
                "INSERT INTO merge_line (repo, task_id, task_version, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (repo) DO UPDATE SET task_id = excluded.task_id, "
                "task_version = excluded.task_version, since = excluded.since",
                (repo, task_id, version, now),
            )
            return None

    def merge_line_holder(self, repo: str) -> tuple[int, int, float] | None:
        r = self._one("SELECT task_id, task_version, since FROM merge_line WHERE repo = ?", (repo,))
        return (int(r[0]), int(r[1]), float(r[2])) if r else None

    # -- effect ledger ---------------------------------------------------------------

    @staticmethod
    def _effect(r: sqlite3.Row) -> EffectRow:
        return EffectRow(
            task_id=r["task_id"],
            transition=r["transition"],
            effect=r["effect"],
            state=r["state"],
            attempts=r["attempts"],
            owner=Owner(r["owner_host"], r["owner_boot"], r["owner_pid"], r["owner_start"]),
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            result=r["result"],
            proc_pid=r["proc_pid"],
            proc_pgid=r["proc_pgid"],
            proc_start=r["proc_start"],
            acting=bool(r["acting"]),
        )

    def get_effect(self, task_id: int, transition: str, effect: str) -> EffectRow | None:
        r = self._one(
            "SELECT * FROM effects WHERE task_id = ? AND transition = ? AND effect = ?",
            (task_id, transition, effect),
        )
        return self._effect(r) if r else None

    def effects_of(self, task_id: int) -> list[EffectRow]:
        rows = self._read("SELECT * FROM effects WHERE task_id = ? ORDER BY started_at", (task_id,))
        return [self._effect(r) for r in rows]

    def started_effects(self) -> list[EffectRow]:
        """Every effect row still marked started (the reaper's and `orch lease show`'s view)."""
        rows = self._read("SELECT * FROM effects WHERE state = 'started' ORDER BY started_at")
        return [self._effect(r) for r in rows]

    _SAME_ROW = (
        "task_id = ? AND transition = ? AND effect = ? AND state = ? AND attempts = ? "
        "AND owner_host = ? AND owner_boot = ? AND owner_pid = ? AND owner_start = ?"
    )

    @staticmethod
    def _row_key(row: EffectRow) -> tuple[Any, ...]:
        o = row.owner
        return (row.task_id, row.transition, row.effect, row.state, row.attempts, *_owner(o))

    @staticmethod
    def _at_stage(c: sqlite3.Connection, task_id: int, stage: str, version: int) -> bool:
        r = c.execute("SELECT stage, version FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return r is not None and r["stage"] == stage and r["version"] == version

    def start_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        now: float,
        seen: EffectRow | None,
        stage: str,
        version: int,
        acting: bool = False,
    ) -> tuple[str, EffectRow | None]:
        """Mark an effect started (durably), a compare-and-swap on what the caller saw.

        Returns ("started", seen) when the row was created (seen None) or taken over from
        exactly the row the caller probed (same state, attempts and owner); ("moved", None)
        when the task is no longer at `stage` and `version` (cancelled, moved on): nothing
        starts; ("changed", current) when the row is not the one seen: look again.
        """
        with self.write(durable=True) as c:
            if not self._at_stage(c, task_id, stage, version):
                return "moved", None
            if seen is None:
                cur = c.execute(
                    "INSERT OR IGNORE INTO effects (task_id, transition, effect, state, owner_host, "
                    "owner_boot, owner_pid, owner_start, started_at, acting) "
                    "VALUES (?, ?, ?, 'started', ?, ?, ?, ?, ?, ?)",
                    (task_id, transition, effect, *_owner(owner), now, int(acting)),
                )
            else:
                cur = c.execute(
                    "UPDATE effects SET state = 'started', attempts = attempts + 1, owner_host = ?, "
                    "owner_boot = ?, owner_pid = ?, owner_start = ?, started_at = ?, ended_at = NULL, "
                    "proc_pid = NULL, proc_pgid = NULL, proc_start = NULL, acting = ? "
                    f"WHERE {self._SAME_ROW}",
                    (*_owner(owner), now, int(acting), *self._row_key(seen)),
                )
            if cur.rowcount == 1:
                return "started", seen
            r = c.execute(
                "SELECT * FROM effects WHERE task_id = ? AND transition = ? AND effect = ?",
                (task_id, transition, effect),
            ).fetchone()
            return "changed", self._effect(r) if r else None

    def set_effect_process(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        pid: int,
        pgid: int,
        start: str | None,
    ) -> bool:
        """Record the effect command's process in the row `owner` holds (durably: the
        command waits for this write before it runs)."""
        with self.write(durable=True) as c:
            cur = c.execute(
                "UPDATE effects SET proc_pid = ?, proc_pgid = ?, proc_start = ? "
                "WHERE task_id = ? AND transition = ? AND effect = ?" + _STARTED_BY,
                (pid, pgid, start, task_id, transition, effect, *_owner(owner)),
            )
            return cur.rowcount == 1

    def mark_effect_acting(
        self, task_id: int, transition: str, effect: str, *, owner: Owner, stage: str, version: int
    ) -> bool:
        """The point of no return, taken only while the task is still at `stage` and
        `version` (a cancel committed first wins: the effect then does nothing)."""
        with self.write(durable=True) as c:
            if not self._at_stage(c, task_id, stage, version):
                return False
            cur = c.execute(
                "UPDATE effects SET acting = 1 "
                "WHERE task_id = ? AND transition = ? AND effect = ?" + _STARTED_BY,
                (task_id, transition, effect, owner.host, owner.boot_id, owner.pid, owner.start_time),
            )
            return cur.rowcount == 1

    def end_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        state: str,
        result: dict[str, Any],
        now: float,
        audit: Audit,
        seen: EffectRow | None = None,
        owner: Owner | None = None,
    ) -> bool:
        """End the row; only if it is still `seen` (a probe's verdict on that row), or still
        started by `owner`, when given. False (nothing written) otherwise."""
        sql = (
            "UPDATE effects SET state = ?, result = ?, ended_at = ? "
            "WHERE task_id = ? AND transition = ? AND effect = ?"
        )
        text = json.dumps(result, sort_keys=True)
        params: tuple[Any, ...] = (state, text, now, task_id, transition, effect)
        if seen is not None:
            sql = "UPDATE effects SET state = ?, result = ?, ended_at = ? WHERE " + self._SAME_ROW
            params = (state, text, now, *self._row_key(seen))
        elif owner is not None:
            sql += _STARTED_BY
            params += _owner(owner)
        with self.write(durable=True) as c:
            cur = c.execute(sql, params)
            if cur.rowcount:
                self._audit(c, audit, now)
            return cur.rowcount == 1

    # -- jobs ------------------------------------------------------------------------

    @staticmethod
    def _job(r: sqlite3.Row) -> Job:
        owner = (
            Owner(r["owner_host"], r["owner_boot"], r["owner_pid"], r["owner_start"])
            if r["owner_pid"] is not None
            else None
        )
        return Job(
            id=r["id"],
            task_id=r["task_id"],
            agent=r["agent"],
            stage=r["stage"],
            task_version=r["task_version"],
            attempt=r["attempt"],
            state=r["state"],
            priority=r["priority"],
            queued_at=r["queued_at"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            deadline=r["deadline"],
            owner=owner,
            pgid=r["pgid"],
            pgid_start=r["pgid_start"],
            exit_code=r["exit_code"],
            reason=r["reason"],
            log_path=r["log_path"],
            head_sha=r["head_sha"],
            ready=bool(r["ready"]),
            not_before=r["not_before"],
            note=r["note"],
        )

    @staticmethod
    def _enqueue(
        c: sqlite3.Connection,
        *,
        task_id: int,
        agent: str,
        stage: str,
        task_version: int,
        now: float,
        attempt: int = 1,
        not_before: float = 0.0,
        note: str | None = None,
    ) -> int | None:
        # ready mirrors the task's waiting_on at insert; _release_dependents keeps it true.
        try:
            cur = c.execute(
                "INSERT INTO jobs (task_id, agent, stage, task_version, attempt, state, queued_at, "
                "not_before, note, ready) SELECT ?, ?, ?, ?, ?, 'queued', ?, ?, ?, waiting_on = 0 "
                "FROM tasks WHERE id = ?",
                (task_id, agent, stage, task_version, attempt, now, not_before, note, task_id),
            )
        except sqlite3.IntegrityError:
            return None  # this attempt of this visit is queued already
        return cur.lastrowid

    def enqueue_job(
        self,
        *,
        task_id: int,
        agent: str,
        stage: str,
        task_version: int,
        now: float,
        attempt: int = 1,
        not_before: float = 0.0,
        note: str | None = None,
        audit: Audit | None = None,
    ) -> Job | None:
        """Queue a job; None if that visit already has this attempt (idempotent)."""
        with self.write() as c:
            job_id = self._enqueue(
                c,
                task_id=task_id,
                agent=agent,
                stage=stage,
                task_version=task_version,
                now=now,
                attempt=attempt,
                not_before=not_before,
                note=note,
            )
            if job_id is None:
                return None
            if audit is not None:
                self._audit(c, audit, now)
            r = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(r)

    def claim_job(
        self,
        *,
        owner: Owner,
        now: float,
        log_dir: Path,
        max_running: int,
        agent_limits: dict[str, int] | None = None,
        deps_enabled: bool = True,
        job_id: int | None = None,
        timeouts: dict[str, float] | None = None,
    ) -> Job | None:
        """Claim one queued job in one write transaction: the next by priority then age, or `job_id`.

        Refuses when `max_running` jobs run already or the job's agent is at its own limit.
        A job whose task waits on a dependency (ready = 0) is never chosen and holds no slot.
        """
        with self.write() as c:
            running = c.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            if running >= max_running:
                return None
            full = [
                agent
                for agent, limit in (agent_limits or {}).items()
                if limit
                and c.execute(
                    "SELECT count(*) FROM jobs WHERE state = 'running' AND agent = ?", (agent,)
                ).fetchone()[0]
                >= limit
            ]
            sql = "SELECT id, agent FROM jobs WHERE state = 'queued' AND not_before <= ?"
            params: list[Any] = [now]
            if deps_enabled:
                sql += " AND ready = 1"
            if job_id is not None:
                sql += " AND id = ?"
                params.append(job_id)
            if full:
                sql += f" AND agent NOT IN ({','.join('?' * len(full))})"
                params.extend(full)
            r = c.execute(sql + " ORDER BY priority DESC, id LIMIT 1", params).fetchone()
            if r is None:
                return None
            timeout = (timeouts or {}).get(r["agent"])
            c.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, owner_host = ?, owner_boot = ?, "
                "owner_pid = ?, owner_start = ?, log_path = ?, deadline = ? "
                "WHERE id = ? AND state = 'queued'",
                (
                    now,
                    owner.host,
                    owner.boot_id,
                    owner.pid,
                    owner.start_time,
                    str(log_dir / f"job-{r['id']}.log"),
                    now + timeout if timeout else None,
                    r["id"],
                ),
            )
            row = c.execute("SELECT * FROM jobs WHERE id = ?", (r["id"],)).fetchone()
            self._audit(
                c,
                Audit(
                    row["task_id"],
                    owner.label(),
                    "job_claimed",
                    {"job": row["id"], "agent": row["agent"], "attempt": row["attempt"]},
                ),
                now,
            )
        return self._job(row)

    def claimable_count(self, *, now: float, deps_enabled: bool = True) -> int:
        sql = "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND not_before <= ?"
        sql += " AND ready = 1" if deps_enabled else ""
        r = self._one(sql + " LIMIT 1000)", (now,))
        return int(r[0]) if r else 0

    def running_count(self) -> int:
        r = self._one("SELECT count(*) FROM jobs WHERE state = 'running'")
        return int(r[0]) if r else 0

    def finish_job(
        self,
        job_id: int,
        *,
        state: str,
        exit_code: int | None,
        reason: str,
        now: float,
        head_sha: str | None,
        audit: Audit,
        owner: Owner | None = None,
    ) -> bool:
        """End a running job; only if it is still running (under `owner`, when given)."""
        assert state in TERMINAL_JOB_STATES
        with self.write() as c:
            sql = (
                "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, ended_at = ?, head_sha = ? "
                "WHERE id = ? AND state IN ('running', 'queued')"
            )
            params: list[Any] = [state, exit_code, reason, now, head_sha, job_id]
            if owner is not None:
                sql += " AND owner_pid = ? AND owner_start = ? AND owner_boot = ?"
                params += [owner.pid, owner.start_time, owner.boot_id]
            if c.execute(sql, params).rowcount != 1:
                return False
            self._audit(c, audit, now)
        return True

    def set_job_process(self, job_id: int, *, pgid: int, pgid_start: str | None) -> None:
        with self.write() as c:
            c.execute("UPDATE jobs SET pgid = ?, pgid_start = ? WHERE id = ?", (pgid, pgid_start, job_id))

    def get_job(self, job_id: int) -> Job | None:
        r = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._job(r) if r else None

    def latest_job(self, task_id: int, agent: str, task_version: int) -> Job | None:
        r = self._one(
            "SELECT * FROM jobs WHERE task_id = ? AND agent = ? AND task_version = ? "
            "ORDER BY attempt DESC LIMIT 1",
            (task_id, agent, task_version),
        )
        return self._job(r) if r else None

    def jobs(self, *, task_id: int | None = None, states: tuple[str, ...] | None = None) -> list[Job]:
        sql, params = "SELECT * FROM jobs WHERE 1=1", list[Any]()
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params.extend(states)
        return [self._job(r) for r in self._read(sql + " ORDER BY id", params)]

    def active_job(self, task_id: int) -> Job | None:
        r = self._one(
            "SELECT * FROM jobs WHERE task_id = ? AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            (task_id,),
        )
        return self._job(r) if r else None

    # -- dependencies ------------------------------------------------------------------

    def add_dep(
        self,
        task_id: int,
        on_task_id: int,
        *,
        unfinished: bool,
        now: float,
        audit: Audit,
        notification: tuple[str, str] | None,
    ) -> list[int] | None:
        """Declare task_id waits on on_task_id. Returns None, or the cycle it would close
        (as task ids, on_task_id first), in which case nothing is written."""
        with self.write() as c:
            cycle = self._path(c, on_task_id, task_id)
            if cycle is not None:
                return cycle
            try:
                c.execute(
                    "INSERT INTO deps (task_id, on_task_id, created_at) VALUES (?, ?, ?)",
                    (task_id, on_task_id, now),
                )
            except sqlite3.IntegrityError:
                return None  # declared already
            if unfinished:
                c.execute("UPDATE tasks SET waiting_on = waiting_on + 1 WHERE id = ?", (task_id,))
                c.execute("UPDATE jobs SET ready = 0 WHERE task_id = ? AND state = 'queued'", (task_id,))
                if notification:
                    self._notify(c, notification[0], task_id, notification[1], now)
            self._audit(c, audit, now)
        return None

    @staticmethod
    def _path(c: sqlite3.Connection, start: int, goal: int) -> list[int] | None:
        """A dependency path start -> ... -> goal, or None (breadth-first over deps)."""
        if start == goal:
            return [start]
        parent: dict[int, int] = {start: start}
        frontier = [start]
        while frontier:
            nxt: list[int] = []
            for node in frontier:
                for (on,) in c.execute("SELECT on_task_id FROM deps WHERE task_id = ?", (node,)):
                    if on in parent:
                        continue
                    parent[on] = node
                    if on == goal:
                        path = [on]
                        while path[-1] != start:
                            path.append(parent[path[-1]])
                        return list(reversed(path))
                    nxt.append(on)
            frontier = nxt
        return None

    def remove_dep(
        self, task_id: int, on_task_id: int, *, unfinished: bool, now: float, audit: Audit
    ) -> bool:
        with self.write() as c:
            if (
                c.execute(
                    "DELETE FROM deps WHERE task_id = ? AND on_task_id = ?", (task_id, on_task_id)
                ).rowcount
                != 1
            ):
                return False
            if unfinished:
                c.execute("UPDATE tasks SET waiting_on = max(waiting_on - 1, 0) WHERE id = ?", (task_id,))
                c.execute(
                    "UPDATE jobs SET ready = 1 WHERE task_id = ? AND state = 'queued' AND "
                    "(SELECT waiting_on FROM tasks WHERE id = ?) = 0",
                    (task_id, task_id),
                )
            self._audit(c, audit, now)
        return True

    def deps_edges(self) -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in self._read("SELECT task_id, on_task_id FROM deps")]

    def deps_of(self, task_id: int) -> list[Task]:
        rows = self._read(
            "SELECT t.* FROM deps d JOIN tasks t ON t.id = d.on_task_id WHERE d.task_id = ? ORDER BY t.id",
            (task_id,),
        )
        return [self._task(r) for r in rows]

    def dependents_of(self, task_id: int) -> list[Task]:
        rows = self._read(
            "SELECT t.* FROM deps d JOIN tasks t ON t.id = d.task_id WHERE d.on_task_id = ? ORDER BY t.id",
            (task_id,),
        )
        return [self._task(r) for r in rows]

    def waiting_tasks(self) -> list[Task]:
        return [self._task(r) for r in self._read("SELECT * FROM tasks WHERE waiting_on > 0 ORDER BY id")]

    def recount_waiting(self, finished_stages: tuple[str, ...], now: float) -> int:
        """Recompute waiting_on and job readiness from the deps table; returns rows fixed.

        The counts are maintained in every write that changes them; this repairs what a
        direct edit of the database (or a bug) left behind, and runs in the tick. Only
        tasks that have dependencies or a non-zero count are looked at, and a read finds
        the mismatches before any write lock is taken: an idle tick writes nothing.
        """
        marks = ",".join("?" * len(finished_stages)) or "''"
        unfinished = (
            "(SELECT count(*) FROM deps d JOIN tasks o ON o.id = d.on_task_id WHERE d.task_id = t.id "
            f"AND o.stage NOT IN ({marks}) AND o.stage != 'cancelled')"
        )
        find = (
            f"SELECT t.id, {unfinished} AS want FROM tasks t "
            "WHERE (t.waiting_on > 0 OR t.id IN (SELECT task_id FROM deps)) "
            f"AND t.waiting_on != {unfinished}"
        )
        wrong = self._read(find, (*finished_stages, *finished_stages))
        if not wrong:
            return 0
        with self.write() as c:
            fixed = 0
            for r in c.execute(find, (*finished_stages, *finished_stages)).fetchall():
                c.execute("UPDATE tasks SET waiting_on = ? WHERE id = ?", (r["want"], r["id"]))
                c.execute(
                    "UPDATE jobs SET ready = ? WHERE task_id = ? AND state = 'queued'",
                    (int(r["want"] == 0), r["id"]),
                )
                fixed += 1
        return fixed

    def unfinished_edges(self, finished_stages: tuple[str, ...]) -> list[tuple[int, int]]:
        """Dependency edges between tasks that are both unfinished: the only ones a cycle
        that blocks anything can run through."""
        marks = ",".join("?" * len(finished_stages)) or "''"
        rows = self._read(
            "SELECT d.task_id, d.on_task_id FROM deps d JOIN tasks a ON a.id = d.task_id "
            "JOIN tasks b ON b.id = d.on_task_id "
            f"WHERE a.stage NOT IN ({marks}) AND a.stage != 'cancelled' "
            f"AND b.stage NOT IN ({marks}) AND b.stage != 'cancelled'",
            (*finished_stages, *finished_stages),
        )
        return [(r[0], r[1]) for r in rows]

    # -- verdicts --------------------------------------------------------------------

    def add_verdict(self, v: Verdict, *, audit: Audit) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO verdicts (task_id, task_version, stage, sha, verdict, actor, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (v.task_id, v.task_version, v.stage, v.sha, v.verdict, v.actor, v.reason, v.at),
            )
            self._audit(c, audit, v.at)

    def latest_verdict(self, task_id: int, task_version: int) -> Verdict | None:
        r = self._one(
            "SELECT * FROM verdicts WHERE task_id = ? AND task_version = ? ORDER BY id DESC LIMIT 1",
            (task_id, task_version),
        )
        if r is None:
            return None
        return Verdict(
            r["task_id"],
            r["task_version"],
            r["stage"],
            r["sha"],
            r["verdict"],
            r["actor"],
            r["reason"],
            r["at"],
        )

    # -- commit statuses (the local forge's CI results) ----------------------------

    def set_commit_status(
        self, *, repo: str, sha: str, context: str, state: str, description: str | None, now: float
    ) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO commit_statuses (repo, sha, context, state, description, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, sha, context) DO UPDATE SET "
                "state = excluded.state, description = excluded.description, at = excluded.at",
                (repo, sha, context, state, description, now),
            )

    def commit_statuses(self, repo: str, sha: str) -> list[tuple[str, str, str | None]]:
        rows = self._read(
            "SELECT context, state, description FROM commit_statuses WHERE repo = ? AND sha = ? "
            "ORDER BY context",
            (repo, sha),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    # -- tracker state cache ---------------------------------------------------------

    def cache_states(self, project: str, states: list[tuple[str, str, str]], *, now: float) -> None:
        """Replace the cached states (id, name, group) of a tracker project. One id may come
        with several names (an aliased state): each is kept; an exact duplicate once."""
        with self.write() as c:
            c.execute("DELETE FROM tracker_states WHERE project = ?", (project,))
            c.executemany(
                "INSERT INTO tracker_states (project, id, name, grp, fetched_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(project, i, n, g, now) for i, n, g in states],
            )

    def cached_states(self, project: str) -> tuple[list[tuple[str, str, str]], float | None]:
        """The cached states of a project and when they were fetched (None: never)."""
        rows = self._read(
            "SELECT id, name, grp, fetched_at FROM tracker_states WHERE project = ? ORDER BY name, id",
            (project,),
        )
        if not rows:
            return [], None
        return [(r[0], r[1], r[2]) for r in rows], float(min(r[3] for r in rows))

    # -- request budgets and holds (rate limits shared by every process) ---------------

    def rate_take(self, bucket: str, window: int, limit: int, *, prev_weight: float = 0.0) -> bool:
        """Count one request in `bucket` for `window` unless that would pass `limit`, where
        the count is this window's plus `prev_weight` times the previous one's (a sliding
        window: the share of the last window still inside the period). False, with nothing
        counted, when full. Windows older than the previous one are dropped."""
        with self.write() as c:
            c.execute("DELETE FROM rate_windows WHERE bucket = ? AND minute < ?", (bucket, window - 1))
            rows = dict(
                c.execute(
                    "SELECT minute, used FROM rate_windows WHERE bucket = ? AND minute IN (?, ?)",
                    (bucket, window - 1, window),
                ).fetchall()
            )
            if rows.get(window, 0) + prev_weight * rows.get(window - 1, 0) + 1 > limit:
                return False
            c.execute(
                "INSERT INTO rate_windows (bucket, minute, used) VALUES (?, ?, 1) "
                "ON CONFLICT (bucket, minute) DO UPDATE SET used = used + 1",
                (bucket, window),
            )
            return True

    def rate_used(self, bucket: str, window: int) -> int:
        row = self._one("SELECT used FROM rate_windows WHERE bucket = ? AND minute = ?", (bucket, window))
        return int(row[0]) if row else 0

    def hold_set(
        self, name: str, *, until: float, value: str | None = None, reason: str | None = None
    ) -> None:
        """Record a hold; a later `until` wins, a `value` given replaces the old one."""
        with self.write() as c:
            c.execute(
                "INSERT INTO holds (name, until, value, reason) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "until = CASE WHEN excluded.until > until THEN excluded.until ELSE until END, "
                "value = coalesce(excluded.value, value), reason = coalesce(excluded.reason, reason)",
                (name, until, value, reason),
            )

    def hold_get(self, name: str) -> tuple[float, str | None] | None:
        """(until, value) of a hold, or None."""
        row = self._one("SELECT until, value FROM holds WHERE name = ?", (name,))
        return (float(row[0]), row[1]) if row else None

    def task_for_ref(self, ref: str) -> Task | None:
        r = self._one("SELECT * FROM tasks WHERE tracker_ref = ?", (ref,))
        return self._task(r) if r else None

    def ensure_task_for_ref(
        self,
        *,
        ref: str,
        key: str,
        title: str,
        repo: str,
        stage: str,
        now: float,
        actor: str,
        agent: str | None,
    ) -> tuple[Task, bool]:
        """The task of a tracker item, created at most once: the unique tracker_ref decides
        between a webhook and the reconciler racing from two processes. The first job is
        queued in the same transaction, so it too exists once. Returns (task, created)."""
        with self.write() as c:
            cur = c.execute(
                "INSERT INTO tasks (key, title, repo, stage, tracker_ref, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key, title, repo, stage, ref, now, now),
            )
            if cur.rowcount != 1:
                row = c.execute("SELECT * FROM tasks WHERE tracker_ref = ?", (ref,)).fetchone()
                if row is None:  # the key is taken by another item: a configuration problem
                    from orch.errors import UsageError

                    raise UsageError(f"task key {key} is taken by another tracker item")
                return self._task(row), False
            task_id = int(cur.lastrowid or 0)
            self._audit(
                c,
                Audit(task_id, actor, "created", {"title": title, "repo": repo, "ref": ref}, None, stage),
                now,
            )
            if agent:
                self._enqueue(c, task_id=task_id, agent=agent, stage=stage, task_version=1, now=now)
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row), True

    # -- facts -------------------------------------------------------------------------

    def set_fact(self, name: str, value: Any, *, now: float) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO facts (name, value, at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
                (name, json.dumps(value, sort_keys=True, default=str), now),
            )

    def fact(self, name: str) -> tuple[Any, float] | None:
        r = self._one("SELECT value, at FROM facts WHERE name = ?", (name,))
        return (json.loads(r[0]), float(r[1])) if r else None

    def facts_since(self, prefix: str, since: float) -> dict[str, tuple[Any, float]]:
        """The facts named `prefix...` written after `since`, by name (one read of a key range)."""
        rows = self._read(
            "SELECT name, value, at FROM facts WHERE name >= ? AND name < ? AND at > ?",
            (prefix, prefix + "\uffff", since),
        )
        return {r[0]: (json.loads(r[1]), float(r[2])) for r in rows}

    def counts(self) -> dict[str, Any]:
        """The numbers the queue view shows, in one read each."""
        jobs = {r[0]: r[1] for r in self._read("SELECT state, count(*) FROM jobs GROUP BY state")}
        stages = {r[0]: r[1] for r in self._read("SELECT stage, count(*) FROM tasks GROUP BY stage")}
        r = self._one("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        blocked = self._one("SELECT count(*), sum(escalated) FROM tasks WHERE blocked = 1")
        return {
            "jobs": jobs,
            "stages": stages,
            "outbox_pending": int(r[0]) if r else 0,
            "blocked": int(blocked[0]) if blocked else 0,
            "escalated": int(blocked[1] or 0) if blocked else 0,
        }

    # -- outbox ----------------------------------------------------------------------

    @staticmethod
    def _notify(c: sqlite3.Connection, key: str, task_id: int | None, text: str, now: float) -> None:
        # The key is the change being reported: the same change is queued once, ever.
        c.execute(
            "INSERT INTO outbox (key, task_id, text, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (key, task_id, text, now),
        )

    def notify(self, key: str, task_id: int | None, text: str, *, now: float) -> None:
        with self.write() as c:
            self._notify(c, key, task_id, text, now)

    def pending_notifications(self, limit: int = 100, *, now: float | None = None) -> list[Notification]:
        """Messages due now: unsent, past their backoff, and not claimed by a live sender."""
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND next_at <= ? "
            "AND (claimed_at IS NULL OR claimed_at < ?) ORDER BY created_at, key LIMIT ?",
            (now, now - CLAIM_S, limit),
        )
        return [Notification(r["key"], r["task_id"], r["text"], r["created_at"]) for r in rows]

    def claim_notification(self, key: str, *, now: float) -> bool:
        """Take a message for sending. The claim expires after CLAIM_S: a sender that died
        mid-send leaves it to the next one (at least once; the key keeps it to one row)."""
        with self.write() as c:
            cur = c.execute(
                "UPDATE outbox SET claimed_at = ?, attempts = attempts + 1 WHERE key = ? AND sent_at IS NULL "
                "AND (claimed_at IS NULL OR claimed_at < ?)",
                (now, key, now - CLAIM_S),
            )
            return cur.rowcount == 1

    def notification_attempts(self, key: str) -> int:
        r = self._one("SELECT attempts FROM outbox WHERE key = ?", (key,))
        return int(r[0]) if r else 0

    def notification_sent(self, key: str, *, now: float) -> None:
        with self.write() as c:
            c.execute("UPDATE outbox SET sent_at = ?, last_error = NULL WHERE key = ?", (now, key))

    def notification_failed(self, key: str, *, now: float, retry_at: float, error: str) -> None:
        with self.write() as c:
            c.execute(
                "UPDATE outbox SET claimed_at = NULL, next_at = ?, last_error = ? WHERE key = ?",
                (retry_at, error[:500], key),
            )

    def outbox_rows(self, *, pending_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT key, task_id, text, created_at, sent_at, attempts, next_at, last_error FROM outbox"
        if pending_only:
            sql += " WHERE sent_at IS NULL"
        return [dict(r) for r in self._read(sql + " ORDER BY created_at LIMIT ?", (limit,))]

    # -- inbox -------------------------------------------------------------------------

    def inbox_put(
        self,
        *,
        source: str,
        event: str,
        delivery: str | None,
        digest: str,
        headers: dict[str, str],
        body: bytes,
        now: float,
    ) -> tuple[int, bool]:
        """Commit a delivery durably (before it is acknowledged). Returns (id, new)."""
        with self.write(durable=True) as c:
            cur = c.execute(
                "INSERT INTO inbox (source, event, delivery, digest, headers, body, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (source, event, delivery, digest, json.dumps(headers, sort_keys=True), body, now),
            )
            if cur.rowcount == 1:
                return int(cur.lastrowid or 0), True
            r = c.execute(
                "SELECT id FROM inbox WHERE source = ? "
                "AND (digest = ? OR (delivery IS NOT NULL AND delivery = ?))",
                (source, digest, delivery),
            ).fetchone()
            return int(r[0]), False

    def inbox_claim(
        self,
        *,
        now: float,
        owner: Owner | None = None,
        claim_s: float = 300.0,
        ceiling_s: float = 14400.0,
    ) -> dict[str, Any] | None:
        """The oldest due delivery, claimed for processing by `owner`.

        A claim holds while its claimer lives, judged by identity as for leases: one whose
        claimer is gone (this host: process missing, pid reused, or an older boot) is
        taken at once. A claim by another host cannot be checked from here and lapses
        after `claim_s`; any claim lapses after `ceiling_s` (the reaper's hard limit).
        """
        due = "state IN ('pending', 'failed') AND next_at <= ?"
        with self.write() as c:
            # INDEXED BY: SQLite's planner does not pick the partial index by itself, even
            # after ANALYZE (not portable SQL; a PostgreSQL store would not need the hint).
            # Claimed rows are few (one per running drain, plus any left by a dead one).
            claimed = c.execute(
                "SELECT id, claimed_at, claim_host, claim_boot, claim_pid, claim_start "
                f"FROM inbox INDEXED BY inbox_claimed WHERE {due} AND claimed_at IS NOT NULL ORDER BY id",
                (now,),
            ).fetchall()
            free = c.execute(
                f"SELECT id FROM inbox INDEXED BY inbox_open WHERE {due} AND claimed_at IS NULL "
                "ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            ids = [r["id"] for r in claimed if _claim_lapsed(r, now, claim_s, ceiling_s)]
            if free is not None:
                ids.append(free[0])
            if not ids:
                return None
            pick = min(ids)
            me = owner or Owner("", "", 0, "")
            c.execute(
                "UPDATE inbox SET claimed_at = ?, attempts = attempts + 1, claim_host = ?, "
                "claim_boot = ?, claim_pid = ?, claim_start = ? WHERE id = ?",
                (now, me.host or None, me.boot_id or None, me.pid or None, me.start_time or None, pick),
            )
            row = c.execute("SELECT * FROM inbox WHERE id = ?", (pick,)).fetchone()
        out = dict(row)
        out["headers"] = json.loads(out["headers"])
        return out

    def inbox_release_claims(self, owner: Owner) -> int:
        """Drop the claims `owner` holds on open deliveries (a drain restarting in a process
        that lives on: its claims would otherwise look held)."""
        with self.write() as c:
            cur = c.execute(
                "UPDATE inbox SET claimed_at = NULL, claim_host = NULL, claim_boot = NULL, "
                "claim_pid = NULL, claim_start = NULL WHERE state IN ('pending', 'failed') "
                "AND claimed_at IS NOT NULL AND claim_host = ? AND claim_boot = ? AND claim_pid = ? "
                "AND claim_start = ?",
                (owner.host, owner.boot_id, owner.pid, owner.start_time),
            )
            return cur.rowcount

    def inbox_done(self, item_id: int, *, now: float, result: str) -> None:
        with self.write() as c:
            c.execute(
                "UPDATE inbox SET state = 'done', processed_at = ?, result = ?, error = NULL, "
                f"{_UNCLAIM} WHERE id = ?",
                (now, _text(result, 1000), item_id),
            )

    def inbox_failed(self, item_id: int, *, now: float, error: str, retry_at: float | None) -> None:
        """Failed: tried again at retry_at, or parked (retry_at None) until a person retries it."""
        state = "failed" if retry_at is not None else "parked"
        with self.write() as c:
            c.execute(
                f"UPDATE inbox SET state = ?, error = ?, next_at = ?, {_UNCLAIM} WHERE id = ?",
                (state, _text(error, 1000), retry_at or 0, item_id),
            )

    def inbox_set(self, item_id: int, *, state: str, now: float) -> bool:
        """A person's retry (back to pending) or drop."""
        with self.write() as c:
            cur = c.execute(
                f"UPDATE inbox SET state = ?, next_at = 0, {_UNCLAIM}, "
                "attempts = CASE WHEN ? = 'pending' THEN 0 ELSE attempts END WHERE id = ?",
                (state, state, item_id),
            )
            return cur.rowcount == 1

    def inbox_rows(self, *, states: tuple[str, ...] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, source, event, delivery, received_at, state, attempts, next_at, error, result, "
            "processed_at, claimed_at, claim_host, claim_boot, claim_pid, claim_start FROM inbox"
        )
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(states)
        params.append(limit)
        out = []
        for r in self._read(sql + " ORDER BY id DESC LIMIT ?", params):
            row = dict(r)
            host, boot, pid, start = (
                row.pop(k) for k in ("claim_host", "claim_boot", "claim_pid", "claim_start")
            )
            row["claimed_by"] = (
                {"host": host, "boot_id": boot, "pid": pid, "start_time": start}
                if row["claimed_at"] is not None and host
                else None
            )
            out.append(row)
        return out

    def inbox_count(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._read("SELECT state, count(*) FROM inbox GROUP BY state")}
