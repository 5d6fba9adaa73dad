"""Copying an orch state between stores (SQLite -> PostgreSQL): `orch store copy`.

Every table of the schema, rows as they are (ids included), in one transaction on the
destination, under its write lock; then the identity columns continue after the copied
ids, and each table's row count is read back on both sides. The two stores are opened by
the same orch, so both are at the same schema version. The backends' own bookkeeping
(SQLite's `_sqlite_migrations`, PostgreSQL's `orch_migrations` and `orch_sessions`) is not
copied: each store has its own.
"""

from __future__ import annotations

from orch.store.db import Store
from orch.store.postgres import TABLES, PostgresDatabase

# Tables whose `id` is an identity column on PostgreSQL (INTEGER PRIMARY KEY on SQLite).
_WITH_IDS = ("tasks", "transitions", "jobs", "verdicts", "inbox")
_BATCH = 500


def row_counts(store: Store) -> dict[str, int]:
    """Rows per table of the schema."""
    return {t: int(store.db.read(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}


def copy_rows(src: Store, dst: Store) -> None:
    """Insert every row of `src` into `dst` (a PostgreSQL store, empty: the caller checks)."""
    if not isinstance(dst.db, PostgresDatabase):
        raise TypeError(f"the destination must be a PostgreSQL store, not {type(dst.db).__name__}")
    with dst.db.write(durable=True) as c:
        for table in TABLES:  # tasks first: the other tables refer to it
            rows = src.db.read(f"SELECT * FROM {table}")
            if not rows:
                continue
            columns = list(rows[0].keys())
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            for i in range(0, len(rows), _BATCH):
                c.executemany(sql, [tuple(r) for r in rows[i : i + _BATCH]])
        for table in _WITH_IDS:
            c.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) "
                f"FROM {table}"
            )
