"""The Store: the one object the rest of orch uses, composed from one part per noun.

Each part (tasks, audit, leases, ledger, jobs, deps, caches, outbox, inbox) holds its
own SQL and reaches the database only through `self.db`, a `backend.Database`. The
SQLite backend is `sqlite.SqliteDatabase`; `Store.open(path)` is the embedded default.
Another backend plugs in as `Store(its_database)`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orch.store.audit import AuditStore
from orch.store.backend import Database
from orch.store.caches import CacheStore
from orch.store.deps import DepStore
from orch.store.inbox import InboxStore
from orch.store.jobs import TERMINAL_JOB_STATES, JobStore
from orch.store.leases import LeaseStore
from orch.store.ledger import LedgerStore
from orch.store.outbox import CLAIM_S, OutboxStore
from orch.store.sqlite import SqliteDatabase
from orch.store.tasks import TaskStore

__all__ = ["CLAIM_S", "TERMINAL_JOB_STATES", "Store"]


class Store(
    TaskStore, AuditStore, LeaseStore, LedgerStore, JobStore, DepStore, CacheStore, OutboxStore, InboxStore
):
    """orch's state. Open the embedded SQLite store with `Store.open(path)`."""

    def __init__(self, db: Database):
        self.db = db

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000, create: bool = True) -> Store:
        """Open (and migrate) the SQLite database at `path`; see `SqliteDatabase.open`."""
        return cls(SqliteDatabase.open(path, busy_timeout_ms=busy_timeout_ms, create=create))

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> int:
        return self.db.schema_version()

    def integrity(self) -> str:
        return self.db.integrity()

    # -- SQLite only: for tests and benches that reach under the store --------------------

    @property
    def sqlite(self) -> SqliteDatabase:
        if not isinstance(self.db, SqliteDatabase):
            raise TypeError(f"not a SQLite store: {type(self.db).__name__}")
        return self.db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.sqlite.conn

    @property
    def path(self) -> Path:
        return self.sqlite.path

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[Any]:
        """One write transaction on the backend (for tests and benches that fill tables)."""
        with self.db.write(durable=durable) as c:
            yield c
