"""Database sessions: the liveness of an orch process on any host (issue 13).

Every orch process registers its identity (host, boot, pid, start) with its database
session; an owner on another host is then alive while one of its sessions is open and
still holds the advisory lock it took at registration (docs/postgres.md, "Sessions").
`PostgresDatabase` inherits these methods; they need its `conn`, `_translated()` and
`_session`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from orch.errors import StoreError
from orch.identity import Owner

# Which database sessions each owner (host, boot, pid, start) has opened: the backend's own
# bookkeeping, beside the version table (SQLite has no sessions). Rows of ended sessions
# are kept a week, longer than any lease may be held before the reaper's hard limit.
SESSIONS_TABLE = "orch_sessions"
SESSIONS_KEPT_S = 7 * 86400
# A session's name from a pg_stat_activity row: `<backend pid>@<backend start in µs>`.
_SESSION_NAME = "pid || '@' || (extract(epoch from backend_start) * 1000000)::bigint"
_LIVE_SESSIONS = f"SELECT {_SESSION_NAME} FROM pg_stat_activity WHERE backend_type = 'client backend'"
# When the server (this incarnation of it: a restart or a promoted standby starts anew)
# started, in µs since the epoch; recorded with each session.
_SERVER_START = "SELECT (extract(epoch from pg_postmaster_start_time()) * 1000000)::bigint"


class SessionLiveness:
    """The session methods of `PostgresDatabase`."""

    conn: psycopg.Connection[Any]
    _session: str | None

    _translated: Callable[[], AbstractContextManager[None]]

    def session(self) -> str:
        """This connection's database session, `<backend pid>@<backend start>` (microseconds
        since the epoch): unique on the server for as long as it runs. The session ends when
        the process dies on any host (its socket closes) or when the server drops it (a host
        that lost power, after the keepalives), and this connection never reconnects: a
        process whose session ended can write nothing more (the owner check before a
        compare-and-swap is that its statements still run in the session it recorded)."""
        if self._session is None:
            with self._translated():
                row = self.conn.execute(
                    f"SELECT {_SESSION_NAME} FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                ).fetchone()
            assert row is not None  # our own session is always listed
            self._session = str(row[0])
        return self._session

    def live_sessions(self, sessions: Iterable[str]) -> set[str]:
        """Which of `sessions` (as `session()` gives them) are still open on the server."""
        wanted = {s for s in sessions if s}
        if not wanted:
            return set()
        with self._translated():
            rows = self.conn.execute(_LIVE_SESSIONS).fetchall()
        return wanted & {r[0] for r in rows}

    def register(self, owner: Owner) -> None:
        """Record that `owner` (this process) holds this connection's session, so that
        processes on other hosts can tell when it is gone (`owner_alive`).

        The session also takes a session-level advisory lock of its own (a key from the
        session and the owner), and records the key. A session that outlives its client
        (a pooler in session mode keeps the server session and hands it to the next
        client) loses the lock when the pooler resets it (`DISCARD ALL`), so the owner is
        then dead although the session lives. The lock is taken before the row is
        written: a row whose key is not held always means an owner gone."""
        session = self.session()
        key = _lock_key(session, owner)
        with self._translated():
            held = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            # Not granted: another client holds that key (not orch's: a 64-bit hash of a
            # unique session); the session alone then says whether the owner lives.
            recorded = key if held is not None and held[0] else None
            self.conn.execute(
                f"INSERT INTO {SESSIONS_TABLE} "
                "(owner_host, owner_boot, owner_pid, owner_start, session, since, server_start, lock_key) "
                f"VALUES (%s, %s, %s, %s, %s, extract(epoch from clock_timestamp()), ({_SERVER_START}), %s) "
                "ON CONFLICT DO NOTHING",
                (owner.host, owner.boot_id, owner.pid, owner.start_time, session, recorded),
            )
            self.conn.execute(
                f"DELETE FROM {SESSIONS_TABLE} WHERE since < extract(epoch from clock_timestamp()) - %s "
                f"AND session NOT IN ({_LIVE_SESSIONS})",
                (SESSIONS_KEPT_S,),
            )

    def owner_alive(self, owner: Owner) -> bool | None:
        """True if one of `owner`'s registered sessions is open and still holds its lock
        (`register`); False if none does and one of them was opened on the server as it
        runs now (the owner is gone, on whatever host); None if it registered none (an
        owner from before sessions, or SQLite's), if every one was opened before the
        server last started (a restart or a failover ended them all at once, whether or
        not the owner lives: its own host judges it), or if the database cannot say now."""
        try:
            rows = self.conn.execute(
                f"SELECT session, server_start, ({_SERVER_START}), lock_key FROM {SESSIONS_TABLE} "
                "WHERE owner_host = %s AND owner_boot = %s AND owner_pid = %s AND owner_start = %s",
                (owner.host, owner.boot_id, owner.pid, owner.start_time),
            ).fetchall()
            if not rows:
                return None
            live = self.live_sessions(r[0] for r in rows)
            if any(r[0] in live and (r[3] is None or self._holds(r[0], r[3])) for r in rows):
                return True
            return False if any(r[1] == r[2] for r in rows) else None
        except (psycopg.Error, StoreError):
            return None  # our own connection failed: unknown, so the owner stays alive

    def _holds(self, session: str, key: int) -> bool:
        """Does the live `session` still hold its advisory lock `key`? (pg_locks shows a
        bigint key as its high half in classid and its low half in objid.)"""
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND pid = %s AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
            (int(session.split("@")[0]), unsigned >> 32, unsigned & 0xFFFF_FFFF),
        ).fetchone()
        return row is not None and row[0] > 0


def _lock_key(session: str, owner: Owner) -> int:
    """The advisory lock key of `owner` in `session`: 64 bits of a hash, signed (bigint)."""
    text = "\0".join((session, owner.host, owner.boot_id, str(owner.pid), owner.start_time))
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big", signed=True
    )
