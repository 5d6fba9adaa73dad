"""The SQLite backend: one file in WAL mode, the embedded default.

Writes go through `write()`: `BEGIN IMMEDIATE` (the write lock is taken before any read
that decides the write), retried with jitter when the database is locked. SQLite's own
busy handler is not fair (under bursts some writers starve for seconds), so each attempt
waits only a short slice in SQLite and the rest of the budget is spent in our loop,
where sleeping with jitter lets writers interleave. Past `busy_timeout_ms` the write
raises `Busy` (exit 4) having changed nothing.

`durable=True` runs the transaction with `synchronous=FULL`: used for writes that
precede an acknowledgement or an irreversible act (an effect marked started, an inbox
insert), which must survive power loss, not just a crash. Elsewhere WAL + NORMAL.

A failure of the file itself (read-only, damaged, full disk) becomes one `StoreError`
line naming the file, what SQLite said and what an operator can do about it.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from orch.errors import Busy, NoDatabase, SchemaTooNew, StoreError
from orch.store import schema
from orch.store.backend import JobClaim

# One SQLite busy-wait slice; the rest of the budget is our jittered loop.
_SLICE_MS = 5


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


class SqliteDatabase:
    """One SQLite file: open (and migrate) with `SqliteDatabase.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, busy_timeout_ms: int):
        self.conn = conn
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    # -- opening and migrating -------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000, create: bool = True) -> SqliteDatabase:
        """Open (and migrate) the database at `path`. With `create=False` a missing or empty
        file is NoDatabase, naming the path: a reading command on an unmounted volume must
        not start a second, empty state beside the real one."""
        path = Path(path)
        if not create and not _has_database(path):
            raise NoDatabase(f"{path}: no orch database here")
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
        db = cls(conn, path, busy_timeout_ms=busy_timeout_ms)
        try:
            db._prepare()
        except BaseException:
            conn.close()
            raise
        return db

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

    # -- the primitives the noun modules use ---------------------------------------------

    @contextmanager
    def write(self, *, durable: bool = False, exclusive: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), retried while the database is locked.
        SQLite has one writer at a time whatever `exclusive` says."""
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

    # jobs.py's claim statement runs in a write(): BEGIN IMMEDIATE serialises it.
    server_claim: Callable[[JobClaim], Any | None] | None = None

    def read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self._retrying(lambda: self.conn.execute(sql, params).fetchall())

    def one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        rows = self.read(sql, params)
        return rows[0] if rows else None

    def schema_version(self) -> int:
        return int(self._retrying(lambda: self.conn.execute("PRAGMA user_version").fetchone()[0]))

    def integrity(self) -> str:
        return str(self._retrying(lambda: self.conn.execute("PRAGMA quick_check").fetchone()[0]))
