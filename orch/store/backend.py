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

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from orch.identity import Owner


class Tx(Protocol):
    """The connection inside one write transaction."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


class JobClaim(NamedTuple):
    """One job claim's inputs: who claims, when, and the limits it must keep (jobs.py)."""

    owner: Owner
    now: float
    log_prefix: str  # the job's log is this, its id, ".log"
    max_running: int
    agent_limits: tuple[tuple[str, int], ...]  # (agent, limit); 0 is no limit
    deps_enabled: bool
    job_id: int | None  # this job or nothing; None: the next by priority then age
    timeouts: tuple[tuple[str, float | None], ...]  # (agent, seconds): the job's deadline


class Database(Protocol):
    """One backend: the transaction and read primitives every noun module uses."""

    # A backend that claims a job in one call to the server sets this (PostgreSQL: a
    # function, one round trip instead of four; orch/store/postgres_claim.py): it returns
    # the claimed job's row, audited, or None. None here: jobs.py's claim statement runs in
    # a `write()`.
    server_claim: Callable[[JobClaim], Any | None] | None

    def write(self, *, durable: bool = False, exclusive: bool = True) -> AbstractContextManager[Tx]:
        """One write transaction that decides on what it reads (SQLite: BEGIN IMMEDIATE),
        retried while the database is locked; `durable` survives power loss.
        `exclusive=False` is for a transaction that decides nothing on what it reads (an
        insert whose duplicates the schema's unique keys refuse, an update of one row by
        its id): a backend may run it beside other writers (PostgreSQL: without the global
        write lock, meeting them row by row)."""
        ...

    def read(self, sql: str, params: Any = ()) -> list[Any]: ...

    def one(self, sql: str, params: Any = ()) -> Any | None: ...

    def schema_version(self) -> int: ...

    def integrity(self) -> str: ...

    def close(self) -> None: ...
