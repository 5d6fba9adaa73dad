"""The PostgreSQL backend: one shared database for orch processes on several hosts (issue 13).

Imported only when the store URL is a `postgresql://` one (psycopg costs start-up time
that the SQLite path must not pay).

**Connecting.** The URL names host, port, user and database; the password never comes from
it (a URL with a password is refused, since the URL lives in orch.toml): it is passed in by
the caller from an environment variable, or libpq finds it itself (`PGPASSWORD`,
`~/.pgpass`). Error messages name the URL without any password. TCP keepalives are on by
default (a peer that lost power is noticed within about 25 s), unless the URL sets them.

**Transactions.** `write()` is one transaction that first takes a transaction-level
advisory lock, the same key for every orch write: PostgreSQL's equivalent of SQLite's
`BEGIN IMMEDIATE`, a single global write lock taken before any read that decides the
write. The store's read-decide-write sequences (a claim counting running jobs against
`max_concurrency`, a lease checked then taken, an inbox claim) are therefore exactly as
serialised as on SQLite, across every host; readers never wait (MVCC). Under READ
COMMITTED each statement's snapshot is taken after the lock is held, so a writer always
sees every write committed before it. Waiting for the lock is bounded by `lock_timeout`
(the store's busy timeout): past it the write raises `Busy` (exit 4) having changed
nothing, as on SQLite.

**Claims.** A job claim does not take the write lock. It is one call to a server-side
function (orch/store/postgres_claim.py: one round trip, where a transaction of separate
statements is four), which takes its own transaction-level advisory lock, shared by claims
only, then picks its row with `FOR UPDATE SKIP LOCKED` and updates it. The concurrency
limits are a count of running jobs on every host: two claims deciding on the same count at
once could both take the last slot, so claims are serialised with each other (under a
millisecond each; agent jobs run for minutes). Claims do not queue behind transitions,
leases or inbox writes, and those meet a claim row by row: a job row another transaction
is changing (a cancel, a dependency making it unready) is passed over, never waited for,
and a writer that finds the row claimed re-reads it under READ COMMITTED (its
`WHERE state = 'queued'` no longer matches). Only a claim makes a job running, so a count
read under the claim lock can only be too high (a job ending meanwhile), never too low: a
limit is never exceeded.

**Durability.** Commits are durable with PostgreSQL's default `synchronous_commit = on`;
a `durable=True` write sets it on for its own transaction, so it is durable even on a
server configured with it off.

**Schema.** The migrations of orch/store/schema.py, translated in one place
(orch/store/postgres_dialect.py), applied in one transaction under the write lock. The
table `orch_migrations` (one row per migration, `seq` = its position) replaces SQLite's
`PRAGMA user_version`: a database whose highest `seq` is above what this orch knows, or
with a migration name it does not know, is refused untouched (`SchemaTooNew`, exit 2).
The claim function is created with the tables, and by the first orch that opens an
existing database without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any, ClassVar

import psycopg
import psycopg.errors
from psycopg.pq import ExecStatus, TransactionStatus

from orch.errors import Busy, NoDatabase, SchemaTooNew, StoreError
from orch.identity import drop_session_check
from orch.store import postgres_claim, schema
from orch.store import postgres_dialect as dialect
from orch.store.backend import JobClaim
from orch.store.postgres_sessions import SESSIONS_TABLE, SessionLiveness
from orch.store.postgres_url import CONNECT_TIMEOUT_S, KEEPALIVES, check_url, keepalives, redacted

VERSION_TABLE = "orch_migrations"
# pg_advisory_xact_lock(key1, key2): key1 is "orch" in ASCII; key2 1 is the store's write
# lock, 2 the claims' lock. Other key2 values are free for other orch locks.
LOCK_SPACE = 0x6F726368
WRITE_LOCK = 1
CLAIM_LOCK = 2
MIN_SERVER = 120000  # PostgreSQL 12: the claim function's plan_cache_mode
# What this orch adds beside the migrations, as an error names it when it may not.
_NO_SESSIONS = f"the table {SESSIONS_TABLE}"
_NO_COLUMNS = f"the columns server_start and lock_key of {SESSIONS_TABLE}"
_NO_FUNCTION = f"the function {postgres_claim.NAME}"


class Row(tuple[Any, ...]):
    """A row that answers `row["column"]`, `row[0]` and `dict(row)`, like sqlite3.Row."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=256)
def _row_class(names: tuple[bytes, ...]) -> type[Row]:
    index = {n.decode("utf-8", "replace"): i for i, n in enumerate(names)}
    return type("Row", (Row,), {"__slots__": (), "_index": index})


def _row_factory(cursor: Any) -> Any:
    # The names straight from the result, not `cursor.description`: that builds a Column
    # object per column on every query (a quarter of a claim's client time, 25 columns).
    res = cursor.pgresult
    if res is None or res.status not in _HAS_ROWS or not res.nfields:
        return tuple  # a command, a COPY: no rows to name
    return _row_class(tuple(res.fname(i) for i in range(res.nfields)))


# TUPLES_CHUNK: a result streamed in chunks (libpq 17 and later).
_HAS_ROWS = tuple(
    s
    for s in (ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, getattr(ExecStatus, "TUPLES_CHUNK", None))
    if s is not None
)


class _Tx:
    """The connection inside one write transaction, taking `?` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self._conn.execute(dialect.query(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        cur = self._conn.cursor()
        cur.executemany(dialect.query(sql), [tuple(p) for p in parameters])
        return cur


class _Migrator:
    """What a migration step of schema.py calls (`db.execute(sql)`), in PostgreSQL's types."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def execute(self, sql: str) -> None:
        self._conn.execute(dialect.ddl(sql))


class PostgresDatabase(SessionLiveness):
    """One PostgreSQL database: open (and migrate) with `PostgresDatabase.open(url)`."""

    def __init__(
        self, conn: psycopg.Connection[Any], where: str, *, busy_timeout_ms: int, password: str | None = None
    ):
        self.conn = conn
        self.where = where  # the URL without a password, for messages
        self.busy_timeout_ms = busy_timeout_ms
        self._password = password  # only to scrub it from messages
        self._session: str | None = None
        self._missing: list[str] = []  # what this orch adds beside the migrations, if absent
        self._schema: str | None = None  # the schema of orch's tables, quoted
        self._claim_sql = ""
        self._keepalives: tuple[int, int, int] | None = None
        self.server_claim: Callable[[JobClaim], Any | None] | None = self._claim_on_server

    @classmethod
    def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        busy_timeout_ms: int = 5000,
        create: bool = True,
        application_name: str = "orch",
    ) -> PostgresDatabase:
        """Connect to `url` and migrate. With `create=False` a database with no orch schema
        is an error that says `orch init` (a reading command must not create the schema)."""
        params = check_url(url)
        where = redacted(url)
        extra: dict[str, Any] = {k: v for k, v in KEEPALIVES.items() if k not in params}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in params:
            extra["application_name"] = application_name
        if password:
            extra["password"] = password
        try:
            conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory, **extra)
        except psycopg.Error as e:
            raise StoreError(f"{where}: cannot connect: {_said(e, password)}") from None
        db = cls(conn, where, busy_timeout_ms=busy_timeout_ms, password=password)
        db._keepalives = keepalives(params)
        try:
            db._prepare(create=create)
        except BaseException:
            conn.close()
            raise
        return db

    def close(self) -> None:
        drop_session_check(self.owner_alive)
        self.conn.close()

    # -- errors ----------------------------------------------------------------------

    def _mapped(self, e: psycopg.Error) -> Exception:
        """A driver error as orch's: Busy for a lock not granted in time, StoreError for
        the database failing; a bug in orch's SQL (integrity, syntax) is raised as is."""
        if isinstance(e, psycopg.errors.LockNotAvailable):
            return Busy(
                f"{self.where}: the store stayed locked for {self.busy_timeout_ms} ms; "
                "nothing was changed, try again"
            )
        if isinstance(e, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
            return Busy(f"{self.where}: a concurrent write conflicted; nothing was changed, try again")
        if isinstance(e, psycopg.IntegrityError | psycopg.ProgrammingError) and not isinstance(
            e, psycopg.errors.InsufficientPrivilege
        ):
            return e
        if self.conn.closed:
            # A connection never reconnects (see session()): say so, not just the driver's words.
            return StoreError(
                f"{self.where}: this process's database session has ended ({_said(e, self._password)}); "
                "it writes nothing more, and other processes may take over what it held"
            )
        return StoreError(f"{self.where}: {_said(e, self._password)}")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            mapped = self._mapped(e)
            if mapped is e:
                raise
            raise mapped from None

    # -- opening and migrating -------------------------------------------------------

    def _version(self) -> tuple[int, list[str]]:
        """(highest migration applied, names of all applied), (0, []) on a fresh database;
        also what this orch adds beside the migrations (`self._missing`)."""
        found = self.conn.execute(
            "SELECT to_regclass(%s), to_regclass(%s), (SELECT count(*) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname IN ('server_start', 'lock_key') "
            "AND NOT attisdropped), (SELECT quote_ident(n.nspname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('jobs'))",
            (VERSION_TABLE, SESSIONS_TABLE, SESSIONS_TABLE),
        ).fetchone()
        assert found is not None  # a SELECT without FROM: one row
        # The sessions table as this orch writes it (server_start and lock_key came after
        # the table), and the claim function in the schema that holds orch's tables.
        self._missing = []
        if found[1] is None:
            self._missing.append(_NO_SESSIONS)
        elif found[2] != 2:
            self._missing.append(_NO_COLUMNS)
        self._schema = found[3]
        if self._schema is not None and not self._claim_function_ok():
            self._missing.append(_NO_FUNCTION)
        if found[0] is None:
            return 0, []
        rows = self.conn.execute(f"SELECT seq, name FROM {VERSION_TABLE} ORDER BY seq").fetchall()
        return (int(rows[-1][0]) if rows else 0), [r[1] for r in rows]

    def _claim_function_ok(self) -> bool:
        """Is the claim function there, beside orch's tables and owned by their owner?
        One owned by another role (who could create in that schema) is never called."""
        row = self.conn.execute(
            "SELECT pg_get_userbyid(p.proowner), p.proowner = c.relowner FROM pg_proc p, pg_class c "
            "WHERE p.oid = to_regprocedure(%s) AND c.oid = to_regclass('jobs')",
            (f"{self._schema}.{postgres_claim.SIGNATURE}",),
        ).fetchone()
        if row is not None and not row[1]:
            raise StoreError(
                f"{self.where}: {self._schema}.{postgres_claim.NAME} belongs to role {row[0]!r}, not to "
                "the owner of orch's tables; orch will not call it: drop it as that owner"
            )
        return row is not None

    def _prepare(self, *, create: bool) -> None:
        if self.conn.info.server_version < MIN_SERVER:
            raise StoreError(
                f"{self.where}: PostgreSQL {self.conn.info.server_version // 10000} is too old; "
                "orch needs 12 or later"
            )
        raw = self.conn.info.parameter_status("server_encoding")
        encoding = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        if encoding != "UTF8":
            # orch stores tracker text in any language; psycopg hands a SQL_ASCII
            # database's text back as bytes, and LATIN1 cannot hold most of it.
            raise StoreError(
                f"{self.where}: the database's encoding is {encoding}; "
                "orch needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')"
            )
        with self._translated():
            self.conn.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                # Every claim and every read-decide-write relies on each statement seeing
                # what committed before it took its lock: READ COMMITTED, whatever the
                # server's or role's default isolation says.
                "set_config('default_transaction_isolation', 'read committed', false)",
                (f"{self.busy_timeout_ms}ms",),
            )
            if self.conn.info.server_version >= 140000:
                # This session is the process's liveness (session()): it idles for as long as
                # an agent or a deploy runs. A server or role default that ends idle
                # sessions would make a live owner look dead to every other host.
                self.conn.execute("SELECT set_config('idle_session_timeout', '0', false)")
            if self._keepalives is not None:
                idle, interval, count = self._keepalives
                self.conn.execute(
                    "SELECT set_config('tcp_keepalives_idle', %s, false), "
                    "set_config('tcp_keepalives_interval', %s, false), "
                    "set_config('tcp_keepalives_count', %s, false)",
                    (str(idle), str(interval), str(count)),
                )
            version, names = self._version()
        self._refuse_newer(version, names)
        if version == 0 and not create:
            raise NoDatabase(f"{self.where}: no orch database here")
        if version < schema.LATEST or self._missing:
            self._migrate()
        assert self._schema is not None  # the tables exist now
        self._claim_sql = postgres_claim.call_sql(self._schema)

    def _refuse_newer(self, version: int, names: list[str]) -> None:
        if version > schema.LATEST:
            raise SchemaTooNew(
                f"{self.where}: database schema {version} was written by a newer orch "
                f"(this one knows {schema.LATEST}); refusing to touch it"
            )
        unknown = set(names) - {name for name, _ in schema.MIGRATIONS}
        if unknown:
            raise SchemaTooNew(
                f"{self.where}: has migrations this orch does not know: {', '.join(sorted(unknown))}"
            )

    def _migrate(self) -> None:
        """Apply what is missing, and only that: a role that may write orch's rows but not
        change its schema opens an up-to-date database without any DDL."""
        with self.write():
            # Under the write lock: two processes opening one fresh database cannot both
            # migrate it; the second sees the first's work here and stops.
            version, names = self._version()
            self._refuse_newer(version, names)
            try:
                self._add_what_is_missing(version)
            except psycopg.errors.InsufficientPrivilege as e:
                what = ", ".join(self._missing) or "its migrations"
                raise StoreError(
                    f"{self.where}: this orch adds {what} to the database, which role "
                    f"{self.conn.info.user!r} may not ({_said(e, self._password)}); run any orch command "
                    "once as the owner of orch's tables (e.g. `orch doctor`), then this one again"
                ) from None

    def _add_what_is_missing(self, version: int) -> None:
        if version < schema.LATEST:
            self._apply_migrations(version)
        if _NO_SESSIONS in self._missing:
            self.conn.execute(
                f"CREATE TABLE {SESSIONS_TABLE} ("
                "owner_host TEXT NOT NULL, owner_boot TEXT NOT NULL, owner_pid BIGINT NOT NULL, "
                "owner_start TEXT NOT NULL, session TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, "
                "server_start BIGINT, lock_key BIGINT, "
                "PRIMARY KEY (owner_host, owner_boot, owner_pid, owner_start, session))"
            )
        if _NO_COLUMNS in self._missing:
            self.conn.execute(
                f"ALTER TABLE {SESSIONS_TABLE} ADD COLUMN IF NOT EXISTS server_start BIGINT, "
                "ADD COLUMN IF NOT EXISTS lock_key BIGINT"
            )
        if version < schema.LATEST or _NO_FUNCTION in self._missing:
            # After the migrations: it names the jobs table's columns as they are now.
            self._schema = self.conn.execute(
                "SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.oid = to_regclass('jobs')"
            ).fetchone()[0]  # type: ignore[index]
            self.conn.execute(postgres_claim.create_sql(self._schema, LOCK_SPACE, CLAIM_LOCK))

    def _apply_migrations(self, version: int) -> None:
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "seq INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, applied_at DOUBLE PRECISION NOT NULL)"
        )
        migrator = _Migrator(self.conn)
        for seq, (name, step) in enumerate(schema.MIGRATIONS, start=1):
            if seq <= version:
                continue
            step(migrator)
            self.conn.execute(
                f"INSERT INTO {VERSION_TABLE} (seq, name, applied_at) "
                "VALUES (%s, %s, extract(epoch from clock_timestamp()))",
                (seq, name),
            )

    # -- the primitives the noun modules use ---------------------------------------------

    @contextmanager
    def write(self, *, durable: bool = False, exclusive: bool = True) -> Iterator[_Tx]:
        """One write transaction under the store's global write lock (see the module
        docstring); `exclusive=False`, one that decides nothing on what it reads, without it."""
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            raise StoreError("nested write transaction")  # a bug, not a state
        # BEGIN, the lock and the durability setting in one round trip (no parameters: the
        # simple protocol takes them all).
        begin = "BEGIN"
        if exclusive:
            begin += f"; SELECT pg_advisory_xact_lock({LOCK_SPACE}, {WRITE_LOCK})"
        if durable:
            begin += "; SET LOCAL synchronous_commit = on"
        with self._translated():
            try:
                self.conn.execute(begin)
                yield _Tx(self.conn)
            except BaseException:
                if not self.conn.closed:
                    with suppress(psycopg.Error):
                        self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _claim_on_server(self, claim: JobClaim) -> Any | None:
        """One job claim: one call of the claim function, in autocommit (its own
        transaction, committed durably by the server's default), so one round trip."""
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            raise StoreError("a claim inside a write transaction")  # a bug, not a state
        with self._translated():
            return self.conn.execute(self._claim_sql, postgres_claim.call_params(claim)).fetchone()

    def read(self, sql: str, params: Any = ()) -> list[Any]:
        with self._translated():
            return self.conn.execute(dialect.query(sql), tuple(params)).fetchall()

    def one(self, sql: str, params: Any = ()) -> Any | None:
        rows = self.read(sql, params)
        return rows[0] if rows else None

    def schema_version(self) -> int:
        with self._translated():
            return self._version()[0]

    def integrity(self) -> str:
        """`ok` when every table of the schema is there (PostgreSQL checks its own pages)."""
        with self._translated():
            missing = [
                t
                for t in TABLES
                if self.conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None  # type: ignore[index]
            ]
        return "ok" if not missing else f"missing tables: {', '.join(missing)}"


# Every table of the schema, tasks first (the others refer to it).
TABLES = (
    "tasks", "transitions", "leases", "effects", "jobs", "verdicts", "commit_statuses", "outbox",
    "deps", "facts", "inbox", "tracker_states", "rate_windows", "holds", "merge_line",
)  # fmt: skip


def _said(e: BaseException, password: str | None) -> str:
    """What the driver said, on one line, with the password scrubbed should it appear."""
    said = " ".join(str(e).split()) or type(e).__name__
    if password:
        said = said.replace(password, "***")
    return said
