"""The seam between the store's nouns and a database engine.

The noun modules (tasks, leases, ledger, jobs, deps, inbox, outbox, caches) hold orch's
SQL and talk only to a `Database`: one write transaction at a time (`write()`), reads
outside any transaction (`read()`, `one()`), and rows that answer both `row["column"]`
and `row[0]`. The SQL is kept portable where that costs nothing: `?` placeholders,
`ON CONFLICT ... DO NOTHING / DO UPDATE`, `RETURNING id` instead of `lastrowid`, no
SQLite-only scalar functions. A backend translates what it must (placeholders,
`INDEXED BY` hints) and owns opening, locking, retrying, durability and turning its
driver's failures into `StoreError` / `Busy` / `SchemaTooNew`.

`SqliteDatabase` (orch/store/sqlite.py) is the embedded default.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Tx(Protocol):
    """The connection inside one write transaction."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


class Database(Protocol):
    """One backend: the transaction and read primitives every noun module uses."""

    # Appended to the SELECT that picks the row a claim takes: PostgreSQL's
    # " FOR UPDATE SKIP LOCKED" (a row another transaction is changing is passed over, not
    # waited for); "" on SQLite, where a write transaction excludes every other writer.
    skip_locked: str

    def write(self, *, durable: bool = False, exclusive: bool = True) -> AbstractContextManager[Tx]:
        """One write transaction that decides on what it reads (SQLite: BEGIN IMMEDIATE),
        retried while the database is locked; `durable` survives power loss.
        `exclusive=False` is for a transaction that decides nothing on what it reads (an
        insert whose duplicates the schema's unique keys refuse, an update of one row by
        its id): a backend may run it beside other writers (PostgreSQL: without the global
        write lock, meeting them row by row)."""
        ...

    def claim(self) -> AbstractContextManager[Tx]:
        """One write transaction that claims queued work against a limit: serialised with
        every other claim (so a count of what runs is exact when it decides), but not
        necessarily with other writes, which it meets row by row (`skip_locked`).
        SQLite: `write()`."""
        ...

    def read(self, sql: str, params: Any = ()) -> list[Any]: ...

    def one(self, sql: str, params: Any = ()) -> Any | None: ...

    def schema_version(self) -> int: ...

    def integrity(self) -> str: ...

    def close(self) -> None: ...
